"""Segmentation (chunked equals whole) and the evaluate stage end to end on Zarr."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from conftest import COMPRESSION, ISBI, write_image
from unet_pipeline import io
from unet_pipeline.evaluate import evaluate, sections_table_path
from unet_pipeline.segment import segment
from unet_pipeline.synth import synthetic_volume


def probability_image(path, cell_probability, chunks):
    volume = np.stack([1 - cell_probability, cell_probability]).astype(np.float32)
    io.create_image(path, cell_probability.shape, np.float32, chunks, COMPRESSION, (50, 4, 4), "nanometer", "p",
                    channels=2)[:] = volume
    return path


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renaming of ids (0 stays 0)."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def smooth_probability(shape, seed):
    return ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), (1, 3, 3)).astype(np.float32)


@pytest.mark.parametrize("slab", [1, 2, 5])
def test_3d_components_streamed_in_slabs_equal_whole_volume_labelling(tmp_path, slab):
    probability = smooth_probability((11, 40, 40), 0)
    threshold = float(np.quantile(probability, 0.5))
    path = probability_image(tmp_path / "p.ome.zarr", probability, (slab, 16, 16))
    segment(path, tmp_path / "s.ome.zarr", "components", "3d", threshold, 0.9, 0, COMPRESSION)
    whole, _ = ndimage.label(probability > threshold)
    assert same_partition(io.open_image(tmp_path / "s.ome.zarr")[:], whole)


def test_2d_components_and_watershed(tmp_path):
    probability = smooth_probability((3, 48, 48), 1)
    threshold = float(np.quantile(probability, 0.4))
    path = probability_image(tmp_path / "p.ome.zarr", probability, (2, 16, 16))
    segment(path, tmp_path / "c.ome.zarr", "components", "2d", threshold, 0.9, 0, COMPRESSION)
    components = io.open_image(tmp_path / "c.ome.zarr")[:]
    for z in range(3):
        assert same_partition(components[z], ndimage.label(probability[z] > threshold)[0])
    assert len(set(np.unique(components[0])) & set(np.unique(components[1]))) == 1  # only 0 shared
    seed = float(np.quantile(probability, 0.9))
    segment(path, tmp_path / "w.ome.zarr", "watershed", "2d", threshold, seed, 5, COMPRESSION)
    flooded = io.open_image(tmp_path / "w.ome.zarr")[:]
    assert np.array_equal(flooded > 0, (components > 0) & (flooded > 0))  # inside the mask
    sizes = np.bincount(flooded.ravel())[1:]
    assert sizes[sizes > 0].min() >= 5
    assert (flooded[0] > 0).sum() > 0


def test_evaluate_labels_against_themselves_is_perfect(tmp_path):
    raw, labels = synthetic_volume((3, 64, 64), seed=2, cell_diameter=24)
    labels_image = write_image(tmp_path / "labels.ome.zarr", labels, (1, 32, 32))
    raw_image = write_image(tmp_path / "raw.ome.zarr", raw, (1, 32, 32))
    from unet_pipeline.cells import separate_cells
    segmentation = np.stack([separate_cells(s) for s in labels]).astype(np.uint32)
    seg_image = write_image(tmp_path / "seg.ome.zarr", segmentation, (1, 32, 32))
    out = tmp_path / "metrics.json"
    result = evaluate(seg_image, labels_image, out, None, 0.5, [0.5], "components", 0.9, 0, True, str(raw_image))
    model = result["model"]
    assert model["pixel_error"] == 0 and model["rand_error"] == 0 and model["warping_error"] == 0
    assert model["variation_of_information"] == pytest.approx(0, abs=1e-9) and model["membrane_dice"] == 1.0
    assert result["baseline_raw_threshold"]["pixel_error"] > 0
    float_raw = write_image(tmp_path / "float.ome.zarr", raw.astype(np.float32) / 255, (1, 32, 32))
    as_float = evaluate(seg_image, labels_image, tmp_path / "f.json", None, 0.5, [0.5], "components", 0.9, 0, True,
                        str(float_raw))["baseline_raw_threshold"]
    integer = result["baseline_raw_threshold"]
    assert as_float["pixel_error"] == integer["pixel_error"] and as_float["rand_error"] == integer["rand_error"]
    assert (integer["threshold"] - 1) / 255 < as_float["threshold"] <= integer["threshold"] / 255 + 1e-6
    assert json.loads(out.read_text())["sections"] == [0, 3]
    rows = sections_table_path(out).read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("section,pixel_error,rand_error")


@pytest.mark.skipif(not (ISBI / "train-labels.tif").exists(), reason=f"ISBI 2012 data not found at {ISBI}")
def test_isbi_labels_against_themselves_and_a_degraded_copy(tmp_path):
    labels = tifffile.imread(ISBI / "train-labels.tif")[:2]
    labels_image = write_image(tmp_path / "labels.ome.zarr", labels, (1, 256, 256))
    cell = (labels > 0).astype(np.float32)
    perfect = probability_image(tmp_path / "perfect.ome.zarr", cell, (1, 256, 256))
    result = evaluate(perfect, labels_image, tmp_path / "a.json", None, 0.5, [0.3, 0.5, 0.7], "components", 0.9, 0,
                      True, None)
    assert result["model"]["rand_error"] == 0 and result["model"]["warping_error"] == 0
    assert result["model"]["pixel_error"] == 0
    blurred = ndimage.gaussian_filter(cell, (0, 2.5, 2.5))
    degraded = probability_image(tmp_path / "blur.ome.zarr", blurred, (1, 256, 256))
    result = evaluate(degraded, labels_image, tmp_path / "b.json", None, 0.5, [0.3, 0.5, 0.7], "components", 0.9, 0,
                      True, None)
    model = result["model"]
    assert 0.005 < model["pixel_error"] < 0.2 and 0.01 < model["rand_error"] < 0.9
    assert model["warping_error"] > 0 and model["rand_error_best_threshold"] <= model["rand_error"] + 1e-12
