import numpy as np
import pytest

from unet_pipeline.core.geometry import Box
from unet_pipeline.nn.mirror import read_mirrored, reflect_coordinates


@pytest.mark.parametrize("size,before,after", [(5, 92, 92), (1, 7, 3), (2, 9, 0), (17, 3, 40), (40, 0, 0)])
def test_matches_numpy_reflect_padding_even_beyond_the_volume(size, before, after):
    line = np.arange(size) * 10
    expected = np.pad(line, (before, after), mode="reflect")
    assert np.array_equal(read_mirrored(line, Box((-before,), (size + after,))), expected)


def test_box_inside_reads_plain_slice():
    volume = np.random.default_rng(0).random((3, 20, 30))
    box = Box((1, 2, 3), (3, 12, 25))
    assert np.array_equal(read_mirrored(volume, box), volume[box.slices()])


def test_tile_equals_crop_of_whole_padded_volume():
    volume = np.random.default_rng(1).random((2, 11, 7))
    padded = np.pad(volume, ((0, 0), (30, 30), (30, 30)), mode="reflect")
    box = Box((0, -13, 4), (2, 20, 36))
    expected = padded[0:2, 30 - 13 : 30 + 20, 30 + 4 : 30 + 36]
    assert np.array_equal(read_mirrored(volume, box), expected)


def test_reflect_coordinates_stay_in_range():
    coords = reflect_coordinates(-1000, 1000, 13)
    assert coords.min() == 0 and coords.max() == 12
