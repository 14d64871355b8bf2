"""The evaluate stage end to end on Zarr: it scores the segmentation that segment wrote."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from conftest import ISBI, evaluate_settings, probability_image, write_image
from scipy import ndimage

from unet_pipeline.segmentation.cells import cell_mask, separate_cells
from unet_pipeline.segmentation.labeling import label_components
from unet_pipeline.stages.evaluate import evaluate
from unet_pipeline.stages.synth import synthetic_volume
from unet_pipeline.storage.tables import sections_table_path


def test_evaluate_labels_against_themselves_is_perfect(tmp_path, dask_cluster):
    raw, labels = synthetic_volume((3, 64, 64), seed=2, cell_diameter=24)
    labels_image = write_image(tmp_path / "labels.ome.zarr", labels, (1, 32, 32))
    raw_image = write_image(tmp_path / "raw.ome.zarr", raw, (1, 32, 32))
    segmentation = np.stack([separate_cells(s) for s in labels]).astype(np.uint32)
    seg_image = write_image(tmp_path / "seg.ome.zarr", segmentation, (1, 32, 32))
    cell = np.stack([cell_mask(s) for s in labels]).astype(np.float32)
    probabilities = probability_image(tmp_path / "p.ome.zarr", cell, (1, 32, 32))
    out = tmp_path / "metrics.json"
    settings = evaluate_settings(dask_cluster, block=[1, 32, 32])
    result = evaluate(seg_image, probabilities, labels_image, out, **{**settings, "baseline_raw": str(raw_image)})
    model = result["model"]
    assert model["pixel_error"] == 0 and model["rand_error"] == 0 and model["warping_error"] == 0
    assert model["variation_of_information"] == pytest.approx(0, abs=1e-9) and model["membrane_dice"] == 1.0
    assert result["baseline_raw_threshold"]["pixel_error"] > 0
    float_raw = write_image(tmp_path / "float.ome.zarr", raw.astype(np.float32) / 255, (1, 32, 32))
    as_float = evaluate(seg_image, probabilities, labels_image, tmp_path / "f.json",
                        **{**settings, "baseline_raw": str(float_raw)})["baseline_raw_threshold"]
    integer = result["baseline_raw_threshold"]
    assert as_float["pixel_error"] == integer["pixel_error"] and as_float["rand_error"] == integer["rand_error"]
    assert (integer["threshold"] - 1) / 255 < as_float["threshold"] <= integer["threshold"] / 255 + 1e-6
    assert json.loads(out.read_text())["sections"] == [0, 3]
    rows = sections_table_path(out).read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("section,pixel_error,rand_error")


@pytest.mark.skipif(not (ISBI / "train-labels.tif").exists(), reason=f"ISBI 2012 data not found at {ISBI}")
def test_isbi_labels_against_themselves_and_a_degraded_copy(tmp_path, dask_cluster):
    labels = tifffile.imread(ISBI / "train-labels.tif")[:2]
    labels_image = write_image(tmp_path / "labels.ome.zarr", labels, (1, 256, 256))
    cell = (labels > 0).astype(np.float32)
    perfect = probability_image(tmp_path / "perfect.ome.zarr", cell, (1, 256, 256))
    cells = write_image(tmp_path / "cells.ome.zarr", np.stack([separate_cells(s) for s in labels]).astype(np.uint32),
                        (1, 256, 256))
    settings = evaluate_settings(dask_cluster, thresholds=[0.3, 0.5, 0.7])
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


def test_blockwise_evaluation_equals_whole_section_evaluation(tmp_path, dask_cluster):
    raw, labels = synthetic_volume((2, 96, 80), seed=3, cell_diameter=20)
    labels_image = write_image(tmp_path / "labels.ome.zarr", labels, (1, 16, 16))
    cell = ndimage.gaussian_filter(np.stack([cell_mask(s) for s in labels]).astype(np.float32), (0, 2, 2))
    probabilities = probability_image(tmp_path / "p.ome.zarr", cell, (1, 16, 16))
    segmentation = write_image(tmp_path / "seg.ome.zarr", label_components(cell > 0.6, "2d", 4)[0], (1, 16, 16))
    raw_image = write_image(tmp_path / "raw.ome.zarr", raw, (1, 16, 16))
    settings = evaluate_settings(dask_cluster, thresholds=[0.4, 0.6], baseline_raw=str(raw_image))
    whole = evaluate(segmentation, probabilities, labels_image, tmp_path / "whole.json", **settings)
    blocks = evaluate(segmentation, probabilities, labels_image, tmp_path / "blocks.json",
                      **{**settings, "block": [1, 32, 48], "context": [0, 16, 16]})
    exact = ["pixel_error", "rand_error", "membrane_dice", "rand_error_best_threshold",  # from integer counts
             "info_error", "variation_of_information"]  # entropies: float sums over the counts in sorted order
    assert {k: blocks["model"][k] for k in exact} == {k: whole["model"][k] for k in exact}
    assert blocks["baseline_raw_threshold"] == pytest.approx(whole["baseline_raw_threshold"], abs=1e-12)
    assert [p["v_rand"] for p in blocks["sweep"]] == [p["v_rand"] for p in whole["sweep"]]
    assert 0 < whole["model"]["rand_error"] < 1
    warping = whole["model"]["warping_error"]
    assert abs(blocks["model"]["warping_error"] - warping) < 0.2 * warping
