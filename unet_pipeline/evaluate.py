"""Evaluate: pixel and Rand error of the model's segmentation, and of a trivial baseline.

The baseline is the best global threshold of the raw intensity (cell iff
raw >= t, t chosen on the evaluated sections themselves, so it is an upper
bound on what thresholding can do) followed by the same connected components.
"""

from __future__ import annotations

import json
import os

import numpy as np

from . import io, progress, provenance
from .cells import cell_mask, separate_cells
from .metrics import RandSums, rand_scores, rand_sums, threshold_errors
from .segment import CELL_CHANNEL, as_probability, label_sections


def evaluate(probabilities_path: str | os.PathLike, segmentation_path: str | os.PathLike,
             labels_path: str | os.PathLike, raw_path: str | os.PathLike, output: str | os.PathLike,
             sections: list[int] | None, threshold: float) -> dict:
    """Write metrics.json for sections [first, last) (all when None) and return it."""
    started = provenance.now()
    probs, segmentation = io.open_image(probabilities_path), io.open_image(segmentation_path)
    labels, raw = io.open_image(labels_path), io.open_image(raw_path)
    for name, array in (("segmentation", segmentation), ("raw", raw)):
        if array.shape != labels.shape:
            raise io.InputError(f"{name} shape {array.shape} differs from the labels' {labels.shape}")
    first, last = sections or (0, labels.shape[0])
    if not 0 <= first < last <= labels.shape[0]:
        raise ValueError(f"evaluation sections [{first}, {last}) do not fit a volume of {labels.shape[0]} sections")

    bins = int(np.iinfo(raw.dtype).max) + 1
    membrane_hist, cell_hist = np.zeros(bins, np.int64), np.zeros(bins, np.int64)
    model_sums, mismatched, pixels = RandSums(), 0, 0
    truth_cells = {}
    for z in progress.track(range(first, last), "evaluate sections"):
        truth = np.asarray(labels[z])
        true_cell = cell_mask(truth)
        truth_cells[z] = separate_cells(truth)
        predicted_cell = as_probability(probs[CELL_CHANNEL, z]) > threshold
        mismatched += np.count_nonzero(predicted_cell != true_cell)
        pixels += truth.size
        model_sums += rand_sums(np.asarray(segmentation[z]), truth_cells[z])
        section = np.asarray(raw[z])
        membrane_hist += np.bincount(section[~true_cell], minlength=bins)
        cell_hist += np.bincount(section[true_cell], minlength=bins)

    errors = threshold_errors(membrane_hist, cell_hist)
    best = int(np.argmin(errors))
    baseline_sums = RandSums()
    for z in range(first, last):
        cell = (np.asarray(raw[z]) >= best).astype(np.float32)
        baseline_sums += rand_sums(label_sections(cell[np.newaxis], 0.5)[0], truth_cells[z])

    metrics = {
        "sections": [first, last],
        "threshold": threshold,
        "model": {"pixel_error": mismatched / pixels, **rand_scores(model_sums)},
        "baseline_raw_threshold": {"threshold": best, "pixel_error": float(errors[best]),
                                   **rand_scores(baseline_sums)},
    }
    metrics["provenance"] = provenance.record(
        "evaluate", {"sections": [first, last], "threshold": threshold},
        {"probabilities": str(probabilities_path), "segmentation": str(segmentation_path),
         "labels": str(labels_path), "raw": str(raw_path)}, started)
    with io.atomic_output(output) as partial:
        partial.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
