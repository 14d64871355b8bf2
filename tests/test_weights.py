import numpy as np
import pytest

from conftest import write_image
from unet_pipeline import io
from unet_pipeline.cells import separate_cells
from unet_pipeline.weights import border_term, class_weights, weights


def brute_force_border_term(cells: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """The formula evaluated literally: for each background pixel, distances to every cell pixel."""
    term = np.zeros(cells.shape)
    ids = [i for i in np.unique(cells) if i > 0]
    coords = {i: np.argwhere(cells == i) for i in ids}
    for y, x in np.argwhere(cells == 0):
        d = sorted(np.sqrt(((coords[i] - (y, x)) ** 2).sum(axis=1)).min() for i in ids)
        if len(d) >= 2:
            term[y, x] = w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))
    return term


def test_border_term_matches_brute_force():
    rng = np.random.default_rng(0)
    cells = np.zeros((24, 30), dtype=np.int32)
    for cell, (y, x) in enumerate(rng.integers(2, 22, size=(5, 2)), start=1):
        cells[y - 2 : y + 2, x - 2 : x + 3] = cell
    cells = separate_cells(cells)
    assert np.allclose(border_term(cells, 10.0, 5.0), brute_force_border_term(cells, 10.0, 5.0), atol=1e-5)


def test_fewer_than_two_cells_gives_no_border_term():
    cells = np.zeros((10, 10), dtype=np.int32)
    assert not border_term(cells, 10, 5).any()
    cells[2:5, 2:5] = 1
    assert not border_term(cells, 10, 5).any()


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


def test_weights_stage_uses_whole_volume_class_frequencies(tmp_path):
    labels = np.zeros((2, 20, 20), dtype=np.uint32)
    labels[0, 2:9, 2:9], labels[0, 11:18, 11:18] = 1, 2  # section 0: two cells
    labels[1, 1:19, 1:19] = 3  # section 1: one big cell
    source = write_image(tmp_path / "labels.ome.zarr", labels, (1, 8, 8))
    out = tmp_path / "weights.ome.zarr"
    weights(source, out, w0=10.0, sigma=5.0, class_balance="balanced", compression={"codec": "zstd", "level": 3})
    result = io.open_image(out)[:]
    fraction = (labels > 0).mean()
    assert result[1, 10, 10] == pytest.approx(0.5 / fraction)
    assert result[1, 0, 0] == pytest.approx(0.5 / (1 - fraction))  # one cell: no border term
    assert result[0, 10, 10] > result[0, 0, 0]  # the gap between the two cells is weighted up
