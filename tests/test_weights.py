import numpy as np
import pytest
import tifffile
from conftest import COMPRESSION, ISBI, write_image
from scipy import ndimage
from weights_reference import naive_border_term

from unet_pipeline.segmentation.cells import cell_mask, separate_cells
from unet_pipeline.stages.synth import synthetic_volume
from unet_pipeline.stages.weights import border_term, class_weights, weight_map, weights
from unet_pipeline.storage import ome_zarr

W0, SIGMA = 10.0, 5.0


def random_cells(shape, seed, sigma=3.0, level=0.55):
    """Blobs of random size and shape (and some touching instances) as cell ids."""
    rng = np.random.default_rng(seed)
    cutoff = np.quantile(ndimage.gaussian_filter(rng.random(shape), sigma), level)
    blobs = ndimage.gaussian_filter(rng.random(shape), sigma) > cutoff
    labels, _ = ndimage.label(blobs)
    return separate_cells(labels)


@pytest.mark.parametrize("seed", range(12))
def test_fast_border_term_matches_naive_in_2d(seed):
    cells = random_cells((60 + 7 * seed, 80), seed)
    assert cells.max() >= 2
    difference = np.abs(border_term(cells, W0, SIGMA) - naive_border_term(cells, W0, SIGMA)).max()
    assert difference <= 1e-3 * W0


@pytest.mark.parametrize("seed,spacing", [(0, (1.0, 1.0, 1.0)), (1, (3.0, 1.0, 1.0)), (2, (12.5, 1.0, 1.0)),
                                          (3, (2.0, 1.0, 1.5))])
def test_fast_border_term_matches_naive_in_3d_with_spacing(seed, spacing):
    cells = random_cells((12, 40, 36), seed, sigma=2.0)
    fast = border_term(cells, W0, SIGMA, spacing)
    assert np.abs(fast - naive_border_term(cells, W0, SIGMA, spacing)).max() <= 1e-3 * W0


def test_synthetic_instances_match_naive():
    _, labels = synthetic_volume((2, 96, 96), seed=4)
    for section in labels:
        cells = separate_cells(section)
        assert np.abs(border_term(cells, W0, SIGMA) - naive_border_term(cells, W0, SIGMA)).max() <= 1e-3 * W0


@pytest.mark.skipif(not (ISBI / "train-labels.tif").exists(), reason=f"ISBI 2012 data not found at {ISBI}")
def test_isbi_labels_match_naive():
    labels = tifffile.imread(ISBI / "train-labels.tif")
    for z in (0, 13):
        cells = separate_cells(labels[z])
        assert cells.max() > 50
        assert np.abs(border_term(cells, W0, SIGMA) - naive_border_term(cells, W0, SIGMA)).max() <= 1e-3 * W0


def test_edge_cases():
    empty = np.zeros((10, 10), dtype=np.int32)
    assert not border_term(empty, W0, SIGMA).any()  # all membrane
    single = empty.copy()
    single[2:5, 2:5] = 1
    assert not border_term(single, W0, SIGMA).any()  # no second-nearest cell
    edge = empty.copy()
    edge[:, :3], edge[:, 5:] = 1, 2  # cells touching the volume border
    term = border_term(edge, W0, SIGMA)
    assert np.allclose(term[:, 3:5], W0 * np.exp(-((1 + 2) ** 2) / (2 * SIGMA**2)))
    assert (term[:, :3] == 0).all()
    balance = (0.7, 1.3)
    assert (weight_map(empty[None], W0, SIGMA, balance, (1, 1, 1), 1e-3, True) == 0.7).all()


def test_touching_instances_are_split_by_background():
    section = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]])
    cells = separate_cells(section)
    assert cells.max() == 2
    assert (cells[:, 1] == 0).all() and (cells[:, 2] == 0).all()


def test_class_weights_balance_the_classes():
    membrane, cell = class_weights(0.8, "balanced")
    assert membrane * 0.2 == pytest.approx(cell * 0.8)
    assert class_weights(0.8, "none") == (1.0, 1.0)
    assert class_weights(0.8, [2, 1]) == (2.0, 1.0)
    with pytest.raises(ValueError, match="both membrane and cell"):
        class_weights(1.0, "balanced")


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_chunked_stage_equals_whole_volume(tmp_path, mode):
    _, labels = synthetic_volume((9, 72, 64), seed=2, cell_diameter=24)
    source = write_image(tmp_path / "labels.ome.zarr", labels, (2, 16, 24))
    out = tmp_path / "weights.ome.zarr"
    weights(source, out, w0=W0, sigma=SIGMA, class_balance="balanced", mode=mode, tolerance=1e-3,
            compression=COMPRESSION)
    chunked = ome_zarr.open_image(out)[:]
    fraction = (np.stack([cell_mask(s) for s in labels]) if mode == "2d" else cell_mask(labels)).mean()
    balance = (0.5 / (1 - fraction), 0.5 / fraction)
    spacing = (50 / 4, 1.0, 1.0)  # conftest's voxel size, in x pixels
    if mode == "2d":
        whole = np.stack([weight_map(separate_cells(s), W0, SIGMA, balance, spacing[1:], 1e-3, False) for s in labels])
    else:
        whole = weight_map(separate_cells(labels), W0, SIGMA, balance, spacing, 1e-3, False)
    assert np.allclose(chunked, whole, atol=1e-6)
    assert ome_zarr.image_attrs(out)["provenance"]["settings"]["mode"] == mode


def test_touching_instances_without_background_get_weights(tmp_path):
    """Instance labels that tile the section (no 0 at all) are what the separation border is for: the class
    balance and the border term are those of the cells split by background."""
    labels = np.zeros((1, 24, 24), np.uint16)
    labels[0, :, :12], labels[0, :12, 12:], labels[0, 12:, 12:] = 1, 2, 3  # three cells, no membrane
    source = write_image(tmp_path / "labels.ome.zarr", labels, (1, 16, 16))
    out = tmp_path / "weights.ome.zarr"
    weights(source, out, w0=W0, sigma=SIGMA, class_balance="balanced", mode="2d", tolerance=1e-3,
            compression=COMPRESSION)
    cells = separate_cells(labels[0])
    assert cells.max() == 3
    fraction = (cells > 0).mean()
    expected = weight_map(cells[None], W0, SIGMA, (0.5 / (1 - fraction), 0.5 / fraction), (1.0, 1.0), 1e-3, True)
    result = ome_zarr.open_image(out)[:]
    assert np.allclose(result, expected, atol=1e-6)
    assert result[0, 5, 11] > result[0, 5, 3] + 5  # the separation line weighs far more than inside a cell
    recorded = ome_zarr.image_attrs(out)["provenance"]["class_weights"]
    assert recorded == pytest.approx([0.5 / (1 - fraction), 0.5 / fraction])
