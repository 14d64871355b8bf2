"""Multiscale pyramids: factors follow the voxel size, blocks are averaged or take their mode, and the
chunked pyramid equals downsampling the whole volume."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from conftest import COMPRESSION
from skimage.measure import block_reduce
from test_predict import run_predict

from unet_pipeline.stages.ingest import ingest
from unet_pipeline.storage import ome_zarr, pyramid_writer
from unet_pipeline.storage.pyramid import downsample, level_factors


def test_anisotropic_em_halves_y_and_x_first_then_all_axes():
    # 4 -> 64 nm in y and x, then all axes at (100, 128, 128) nm; z alone once y and x fit one chunk
    assert level_factors((50, 4, 4), (400, 16384, 16384), (16, 256, 256)) == [
        (1, 2, 2), (1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 1, 1), (2, 1, 1)]
    assert level_factors((8, 8, 8), (256, 256, 256), (64, 64, 64)) == [(2, 2, 2), (2, 2, 2)]
    assert level_factors((4, 4, 4), (1, 512, 512), (1, 128, 128)) == [(1, 2, 2), (1, 2, 2)]
    assert level_factors((50, 4, 4), (4, 64, 64), (4, 64, 64)) == []  # fits one chunk


def test_mean_and_mode_equal_a_per_block_reference():
    rng = np.random.default_rng(0)
    values = rng.random((4, 6, 8)).astype(np.float32)
    assert np.allclose(downsample(values, (2, 2, 2), "mean"), block_reduce(values, (2, 2, 2), np.mean))
    labels = rng.integers(0, 4, size=(2, 6, 8)).astype(np.uint32)
    expected = np.empty((1, 3, 4), np.uint32)
    for y in range(3):
        for x in range(4):
            counts = np.bincount(labels[:, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].ravel())
            expected[0, y, x] = counts.argmax()  # the smallest of the most frequent
    assert np.array_equal(downsample(labels, (2, 2, 2), "mode"), expected)
    assert set(np.unique(downsample(labels, (2, 2, 2), "mode"))) <= set(np.unique(labels))


def test_a_ragged_edge_repeats_its_last_row():
    block = np.array([[0, 2, 4], [2, 4, 6]], np.uint8)
    assert np.array_equal(downsample(block, (2, 2), "mean"), [[2, 5]])


@pytest.mark.parametrize("method,dtype", [("mean", np.uint8), ("mean", np.float16), ("mode", np.uint32)])
def test_an_all_zero_block_downsamples_as_any_block_does(method, dtype):
    """The shortcut for all-zero blocks (a tissue mask's skipped regions) keeps the shape and type of the
    general path: one non-zero voxel, far from the others, takes the general path for comparison."""
    zeros = np.zeros((3, 5, 7), dtype)
    one = zeros.copy()
    one[2, 4, 6] = 1
    shortcut, general = downsample(zeros, (1, 2, 2), method), downsample(one, (1, 2, 2), method)
    general[2, 2, 3] = 0
    assert shortcut.dtype == general.dtype and np.array_equal(shortcut, general)
    with pytest.raises(ValueError, match="must be one of"):
        downsample(zeros, (2, 2, 2), "max")


@pytest.mark.parametrize("method,dtype", [("mean", np.uint8), ("mean", np.float32), ("mode", np.uint32)])
def test_chunked_pyramid_equals_downsampling_the_whole_volume(tmp_path, method, dtype):
    volume = (np.random.default_rng(1).random((5, 150, 70)) * 200).astype(dtype)
    path = tmp_path / "image.ome.zarr"
    ome_zarr.create_image(path, volume.shape, dtype, (1, 32, 32), COMPRESSION, (30.0, 5.0, 5.0), "nanometer", "image",
                    labels=method == "mode")[:] = volume
    pyramid_writer.write_pyramid(path)
    multiscale = ome_zarr.image_attrs(path)["multiscales"][0]
    steps = level_factors((30.0, 5.0, 5.0), volume.shape, (1, 32, 32))
    assert len(steps) >= 3 and multiscale["type"] == method
    assert [d["path"] for d in multiscale["datasets"]] == [str(level) for level in range(len(steps) + 1)]
    expected, factor = volume, np.ones(3)
    for level, step in enumerate(steps, start=1):
        expected = downsample(expected, step, method)
        factor *= step
        stored = ome_zarr.zarr.open_array(str(path / str(level)), mode="r")
        assert stored.dtype == dtype and stored.shape == expected.shape and np.array_equal(stored[:], expected)
        scale, translation = multiscale["datasets"][level]["coordinateTransformations"]
        assert scale["scale"] == list(np.array([30.0, 5.0, 5.0]) * factor)
        assert translation["translation"] == list((factor - 1) * np.array([30.0, 5.0, 5.0]) / 2)


def test_probabilities_keep_their_channel_axis(tmp_path):
    probs = np.random.default_rng(2).random((2, 3, 64, 64)).astype(np.float32)
    path = tmp_path / "p.ome.zarr"
    ome_zarr.create_image(path, probs.shape[1:], np.float32, (1, 16, 16), COMPRESSION, (50.0, 4.0, 4.0), "nanometer",
                    "probabilities", channels=2)[:] = probs
    pyramid_writer.write_pyramid(path)
    level1 = ome_zarr.zarr.open_array(str(path / "1"), mode="r")
    assert level1.shape == (2, 3, 32, 32)
    assert np.allclose(level1[:], downsample(probs, (1, 1, 2, 2), "mean"))
    assert ome_zarr.image_attrs(path)["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"] == [
        1.0, 50.0, 8.0, 8.0]


def expected_levels(volume: np.ndarray, voxel, chunks, method: str) -> list[np.ndarray]:
    levels = [volume]
    for step in level_factors(voxel, volume.shape, chunks):
        levels.append(downsample(levels[-1], step, method))
    return levels


def assert_pyramid_equals(path, volume: np.ndarray, voxel, chunks, method: str) -> None:
    expected = expected_levels(volume, voxel, chunks, method)
    datasets = ome_zarr.image_attrs(path)["multiscales"][0]["datasets"]
    assert len(datasets) == len(expected)
    for dataset, level in zip(datasets, expected):
        level_array = ome_zarr.zarr.open_array(str(path / dataset["path"]), mode="r")
        assert np.array_equal(level_array[:], level), dataset["path"]


@pytest.mark.parametrize("kind", ["raw", "labels"])
def test_levels_written_slab_by_slab_with_level_0_equal_the_whole_volume_chain(tmp_path, kind):
    volume = (np.random.default_rng(3).random((5, 150, 70)) * 200).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", volume)
    out = tmp_path / f"{kind}.ome.zarr"
    ingest(kind, tmp_path / "stack.tif", out, chunks=(1, 32, 32), compression=COMPRESSION,
           voxel_size=(30.0, 5.0, 5.0), unit="nanometer")
    assert level_factors((30.0, 5.0, 5.0), volume.shape, (1, 32, 32))[0][0] == 1  # some levels are slab-local
    assert_pyramid_equals(out, volume, (30.0, 5.0, 5.0), (1, 32, 32), "mean" if kind == "raw" else "mode")


def test_without_a_pyramid_every_derived_image_keeps_level_0_alone(tmp_path, random_checkpoint):
    volume = (np.random.default_rng(4).random((3, 150, 70)) * 200).astype(np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", volume)
    ingest("raw", tmp_path / "stack.tif", tmp_path / "raw.ome.zarr", chunks=(1, 32, 32), compression=COMPRESSION,
           voxel_size=(30.0, 5.0, 5.0), unit="nanometer", pyramid=False)
    run_predict(tmp_path / "raw.ome.zarr", random_checkpoint(depth=1), tmp_path / "probabilities.ome.zarr")
    for name in ("raw", "probabilities"):
        datasets = ome_zarr.image_attrs(tmp_path / f"{name}.ome.zarr")["multiscales"][0]["datasets"]
        assert [d["path"] for d in datasets] == ["0"]
        assert not (tmp_path / f"{name}.ome.zarr" / "1").exists()
    assert np.array_equal(ome_zarr.open_image(tmp_path / "raw.ome.zarr")[:], volume)
