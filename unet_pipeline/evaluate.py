"""Evaluate the segmentation that `segment` wrote against the labels, per section and pooled.

Metrics are those of the ISBI 2012 challenge (see `metrics`), computed on 2D
sections: foreground-restricted Rand and information scores and the
variation of information of the segmentation (also after thinning its
boundaries), and, of the cell probabilities at `threshold`, the pixel error,
the warping error and the membrane Dice and Jaccard. A 3D segmentation is
scored section by section, as the challenge does. Extras: the Rand error of
threshold + connected components swept over thresholds, and a trivial
baseline (the best global threshold of the raw intensity, then components).
Contingency tables are kept per section and summed, so the pooled figures
are exact.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from . import io, metrics, progress, provenance
from .cells import cell_mask, separate_cells
from .preprocess import FLOAT_BINS
from .labeling import label_components
from .segment import CELL_CHANNEL, as_probability

SECTION_FIELDS = ["section", "pixel_error", "rand_error", "rand_split", "rand_merge", "info_error",
                  "variation_of_information", "warping_error", "membrane_dice", "membrane_jaccard"]


def thin_boundaries(segmentation: np.ndarray) -> np.ndarray:
    """Segments of a (y, x) section after its boundary is thinned to one pixel (the challenge's later ranking)."""
    thin = skeletonize(segmentation == 0)
    cells, _ = ndimage.label(~thin)
    return cells


def _namespaced(ids: np.ndarray, section: int) -> np.ndarray:
    """Ids made unique per section (0 stays 0), for pooling 2D sections."""
    return np.where(ids > 0, ids.astype(np.int64) + (section << 32), 0)


def section_table(proposal: np.ndarray, truth_cells: np.ndarray, section: int) -> metrics.Contingency:
    return metrics.Contingency().add(_namespaced(proposal, section), _namespaced(truth_cells, section))


def scores(table: metrics.Contingency) -> dict[str, float]:
    return {**metrics.rand_scores(table), **metrics.info_scores(table)}


def evaluate(segmentation_path: str | os.PathLike, probabilities_path: str | os.PathLike,
             labels_path: str | os.PathLike, output: str | os.PathLike, *, sections: list[int] | None,
             threshold: float, thresholds: list[float], warping: bool, baseline_raw: str | None) -> dict:
    """Score the segmentation against the labels; write metrics.json and <name>_sections.csv; return the metrics.

    Args:
        sections: [first, last) sections to score; None: all.
        threshold: cell probability above which a pixel counts as cell for the
            pixel error, the warping error and the membrane Dice/Jaccard.
        thresholds: the extra sweep: threshold + connected components of the
            probabilities at each (the challenge's Rand error is 1 - its best
            V_Rand); empty: no sweep.
        warping: compute the warping error (compiled, per section).
        baseline_raw: a raw image whose best global threshold is scored too; None: no baseline.
    """
    started = provenance.now()
    segmentation, labels = io.open_image(segmentation_path), io.open_image(labels_path)
    probabilities = io.open_image(probabilities_path)
    for path, array in ((segmentation_path, segmentation), (probabilities_path, probabilities)):
        if array.shape[-3:] != labels.shape:
            raise io.InputError(f"{path}: shape {array.shape} does not match the labels' {labels.shape}")
    first, last = sections or (0, labels.shape[0])
    if not 0 <= first < last <= labels.shape[0]:
        raise ValueError(f"evaluation sections [{first}, {last}) do not fit a volume of {labels.shape[0]} sections")

    pooled, thinned = metrics.Contingency(), metrics.Contingency()
    sweep = {t: metrics.Contingency() for t in thresholds}
    rows, mismatched, warped, pixels = [], 0, 0, 0
    membrane = {"predicted": 0, "true": 0, "both": 0, "either": 0}
    for z in progress.track(range(first, last), "evaluate sections"):
        truth = np.asarray(labels[z])
        true_cell, truth_cells = cell_mask(truth), separate_cells(truth)
        proposal = np.asarray(segmentation[z])
        cell = as_probability(probabilities[CELL_CHANNEL, z])
        predicted_cell = cell > threshold
        for t, table in sweep.items():
            table.merge(section_table(label_components(cell[np.newaxis] > t, "2d", 4)[0][0], truth_cells, z))
        table = section_table(proposal, truth_cells, z)
        pooled.merge(table)
        thinned.merge(section_table(thin_boundaries(proposal), truth_cells, z))
        row = {"section": z, "pixel_error": float(np.mean(predicted_cell != true_cell)), **scores(table),
               **_membrane(~predicted_cell, ~true_cell)}
        mismatched += int(np.count_nonzero(predicted_cell != true_cell))
        pixels += truth.size
        _count_membrane(membrane, ~predicted_cell, ~true_cell)
        if warping:
            error, errors = metrics.warping_error(predicted_cell, true_cell)
            row["warping_error"] = error
            warped += int(np.count_nonzero(errors))
        rows.append(row)

    result: dict[str, Any] = {
        "sections": [first, last],
        "threshold": threshold,
        "model": {"pixel_error": mismatched / pixels, **scores(pooled),
                  "v_rand_thinned": metrics.rand_scores(thinned)["v_rand"], **_membrane_scores(membrane)},
    }
    if warping:
        result["model"]["warping_error"] = warped / pixels
    if sweep:
        curve = [{"threshold": t, **{k: v for k, v in scores(table).items() if k in ("v_rand", "v_info")}}
                 for t, table in sweep.items()]
        result["sweep"] = curve
        result["model"]["rand_error_best_threshold"] = 1 - max(point["v_rand"] for point in curve)
    if baseline_raw:
        result["baseline_raw_threshold"] = _baseline(baseline_raw, labels, first, last)
    result["provenance"] = provenance.record(
        "evaluate", {"sections": [first, last], "threshold": threshold, "thresholds": thresholds, "warping": warping},
        {"segmentation": str(segmentation_path), "probabilities": str(probabilities_path),
         "labels": str(labels_path), "baseline_raw": baseline_raw}, started)
    table_path = sections_table_path(output)
    with io.atomic_output(table_path) as partial, open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SECTION_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with io.atomic_output(output) as partial:
        partial.write_text(json.dumps(result, indent=2) + "\n")
    return result


def sections_table_path(output: str | os.PathLike) -> Path:
    """The per-section CSV written beside metrics.json."""
    output = Path(output)
    return output.with_name(output.stem + "_sections.csv")


def _membrane(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    values = metrics.dice_jaccard(predicted, truth)
    return {"membrane_dice": values["dice"], "membrane_jaccard": values["jaccard"]}


def _count_membrane(counts: dict[str, int], predicted: np.ndarray, truth: np.ndarray) -> None:
    """Add a section's membrane overlap counts (pooled Dice and Jaccard without keeping the sections)."""
    counts["predicted"] += int(np.count_nonzero(predicted))
    counts["true"] += int(np.count_nonzero(truth))
    counts["both"] += int(np.count_nonzero(predicted & truth))
    counts["either"] += int(np.count_nonzero(predicted | truth))


def _membrane_scores(counts: dict[str, int]) -> dict[str, float]:
    total = counts["predicted"] + counts["true"]
    return {"membrane_dice": 2 * counts["both"] / total if total else 1.0,
            "membrane_jaccard": counts["both"] / counts["either"] if counts["either"] else 1.0}


def _baseline(raw_path: str, labels: Any, first: int, last: int) -> dict[str, float]:
    """Best global raw threshold (chosen on these sections: an upper bound for thresholding), then components."""
    raw = io.open_image(raw_path)
    if raw.shape != labels.shape:
        raise io.InputError(f"{raw_path}: raw shape {raw.shape} differs from the labels' {labels.shape}")
    levels, value_of = _intensity_levels(raw, first, last)
    bins = len(value_of)
    membrane_hist, cell_hist = np.zeros(bins, np.int64), np.zeros(bins, np.int64)
    for z in range(first, last):
        section, true_cell = levels(np.asarray(raw[z])), cell_mask(np.asarray(labels[z]))
        membrane_hist += np.bincount(section[~true_cell], minlength=bins)
        cell_hist += np.bincount(section[true_cell], minlength=bins)
    errors = metrics.threshold_errors(membrane_hist, cell_hist)
    best = int(np.argmin(errors))
    table = metrics.Contingency()
    for z in range(first, last):
        cell = (levels(np.asarray(raw[z])) >= best).astype(np.float32)[np.newaxis]
        table.merge(section_table(label_components(cell > 0.5, "2d", 4)[0][0], separate_cells(np.asarray(labels[z])), z))
    return {"threshold": float(value_of[best]), "pixel_error": float(errors[best]), **scores(table)}


def _intensity_levels(raw: Any, first: int, last: int) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
    """Raw intensities as histogram bins, and the intensity of each bin: integer raw is its own bins;
    float raw gets FLOAT_BINS (as preprocess) between the evaluated sections' minimum and maximum."""
    if np.issubdtype(raw.dtype, np.integer):
        return (lambda section: section), np.arange(int(np.iinfo(raw.dtype).max) + 1)
    low = min(float(np.min(raw[z])) for z in range(first, last))
    high = max(float(np.max(raw[z])) for z in range(first, last))
    step = max(high - low, 1e-6) / (FLOAT_BINS - 1)
    return (lambda section: np.round((section - low) / step).astype(np.int64)), low + step * np.arange(FLOAT_BINS)
