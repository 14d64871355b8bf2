"""The evaluate stage end to end on Zarr: it scores the segmentation that segment wrote."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from conftest import ISBI, probability_image, write_image
from unet_pipeline.evaluate import evaluate, sections_table_path
from unet_pipeline.cells import cell_mask, separate_cells
from unet_pipeline.labeling import label_components
from unet_pipeline.synth import synthetic_volume


def test_evaluate_labels_against_themselves_is_perfect(tmp_path):
    raw, labels = synthetic_volume((3, 64, 64), seed=2, cell_diameter=24)
    labels_image = write_image(tmp_path / "labels.ome.zarr", labels, (1, 32, 32))
    raw_image = write_image(tmp_path / "raw.ome.zarr", raw, (1, 32, 32))
    segmentation = np.stack([separate_cells(s) for s in labels]).astype(np.uint32)
    seg_image = write_image(tmp_path / "seg.ome.zarr", segmentation, (1, 32, 32))
    cell = np.stack([cell_mask(s) for s in labels]).astype(np.float32)
    probabilities = probability_image(tmp_path / "p.ome.zarr", cell, (1, 32, 32))
    out = tmp_path / "metrics.json"
    settings = {"sections": None, "threshold": 0.5, "thresholds": [0.5], "warping": True}
    result = evaluate(seg_image, probabilities, labels_image, out, **settings, baseline_raw=str(raw_image))
    model = result["model"]
    assert model["pixel_error"] == 0 and model["rand_error"] == 0 and model["warping_error"] == 0
    assert model["variation_of_information"] == pytest.approx(0, abs=1e-9) and model["membrane_dice"] == 1.0
    assert result["baseline_raw_threshold"]["pixel_error"] > 0
    float_raw = write_image(tmp_path / "float.ome.zarr", raw.astype(np.float32) / 255, (1, 32, 32))
    as_float = evaluate(seg_image, probabilities, labels_image, tmp_path / "f.json", **settings,
                        baseline_raw=str(float_raw))["baseline_raw_threshold"]
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
    cells = write_image(tmp_path / "cells.ome.zarr", np.stack([separate_cells(s) for s in labels]).astype(np.uint32),
                        (1, 256, 256))
    settings = {"sections": None, "threshold": 0.5, "thresholds": [0.3, 0.5, 0.7], "warping": True, "baseline_raw": None}
    result = evaluate(cells, perfect, labels_image, tmp_path / "a.json", **settings)
    assert result["model"]["rand_error"] == 0 and result["model"]["warping_error"] == 0
    assert result["model"]["pixel_error"] == 0
    blurred = ndimage.gaussian_filter(cell, (0, 2.5, 2.5))
    degraded = probability_image(tmp_path / "blur.ome.zarr", blurred, (1, 256, 256))
    components = write_image(tmp_path / "components.ome.zarr", label_components(blurred > 0.5, "2d", 4)[0],
                             (1, 256, 256))
    result = evaluate(components, degraded, labels_image, tmp_path / "b.json", **settings)
    model = result["model"]
    assert 0.005 < model["pixel_error"] < 0.2 and 0.01 < model["rand_error"] < 0.9
    assert model["warping_error"] > 0 and model["rand_error_best_threshold"] <= model["rand_error"] + 1e-12
