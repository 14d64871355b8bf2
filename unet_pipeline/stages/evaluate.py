"""Evaluate the segmentation that `segment` wrote against the labels, blockwise on the Dask cluster.

Metrics are those of the ISBI 2012 challenge (see `metrics`), on 2D
sections: foreground-restricted Rand and information scores and the
variation of information of the segmentation (also after thinning its
boundaries to one pixel), and, of the cell probabilities at `threshold`, the
pixel error, the warping error and the membrane Dice and Jaccard. A 3D
segmentation is scored section by section, as the challenge does. Extras:
the Rand error of threshold + connected components swept over thresholds,
and a trivial baseline (the best global threshold of the raw intensity, then
components).

No process holds a section: the ground-truth cells, the sweep's components
and the baseline's are labelled blockwise and exactly (`blockwise.components`),
and each block returns integer tallies (contingency tables, pixel counts)
that add up to the exact per-section and pooled figures. Two figures are
local to a block and its context: the thinned boundaries, and the warping
error, whose topology is checked within each block and its context (equal
to the per-section figure when a block holds the whole section, as with the
default block on sections up to 512 x 512).
"""

from __future__ import annotations

import csv
import functools
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from skimage.morphology import skeletonize
from skimage.segmentation import expand_labels

from ..core.errors import ConfigError, InputError
from ..core.intensity import FLOAT_BINS
from ..core.stage_settings import checked_stage
from ..distributed import cluster, records
from ..distributed.blocks import Block, aligned_block_shape
from ..distributed.blockwise import Annotation, Mask, Runner, Work, components, open_array, read_cell_probability
from ..distributed.tuning import TRUTH
from ..segmentation import metrics
from ..segmentation.cells import check_ignore_label
from ..segmentation.metrics import section_table
from ..storage import chunk_files, ome_zarr, outputs, provenance
from ..storage.tables import SECTION_FIELDS, sections_table_path


def scores(table: metrics.Contingency | metrics.Sums) -> dict[str, float]:
    return {**metrics.rand_scores(table), **metrics.info_scores(table)}


def thin_boundaries(segmentation: np.ndarray) -> np.ndarray:
    """A (y, x) segmentation with its boundary (0) thinned to one pixel: boundary pixels off the skeleton join
    the nearest segment (the challenge's later ranking thinned the proposals' boundaries)."""
    boundary = segmentation == 0
    if not boundary.any():  # e.g. an agglomeration: segments meet without a boundary between them
        return segmentation
    skeleton = skeletonize(boundary)
    return np.where(skeleton, 0, expand_labels(segmentation, distance=max(segmentation.shape)))


@dataclass
class Tally:
    """Exactly mergeable counts of a section's blocks (contingency tables), or of finished sections (their
    `metrics.Sums`, which pool without the tables)."""

    table: metrics.Contingency | metrics.Sums = field(default_factory=metrics.Sums)
    thinned: metrics.Contingency | metrics.Sums = field(default_factory=metrics.Sums)
    sweep: list[metrics.Contingency] | list[metrics.Sums] = field(default_factory=list)
    mismatched: int = 0
    pixels: int = 0
    warped: int = 0
    membrane: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("predicted", "true", "both"), 0))

    def merge(self, other: "Tally") -> "Tally":
        self.table = self.table.merge(other.table)
        self.thinned = self.thinned.merge(other.thinned)
        self.sweep = [a.merge(b) for a, b in zip(self.sweep, other.sweep)] if self.sweep else other.sweep
        self.mismatched += other.mismatched
        self.pixels += other.pixels
        self.warped += other.warped
        for key, count in other.membrane.items():
            self.membrane[key] += count
        return self

    def summed(self) -> "Tally":
        """A finished section's tally with its tables reduced to their sums."""
        return Tally(metrics.sums(self.table), metrics.sums(self.thinned), [metrics.sums(t) for t in self.sweep],
                     self.mismatched, self.pixels, self.warped, self.membrane)

    def membrane_scores(self) -> dict[str, float]:
        scores = metrics.overlap_scores(self.membrane["predicted"], self.membrane["true"], self.membrane["both"])
        return {"membrane_dice": scores["dice"], "membrane_jaccard": scores["jaccard"]}


def score_block(block: Block, work: Work, segmentation: str, probabilities: str, labels: str, threshold: float,
                warping: bool, truth_ids: np.ndarray, sweep_ids: list[np.ndarray],
                ignore_label: int | None) -> dict[int, Tally]:
    """Worker: the tallies of each section of a block (the segmentation's thinning sees the block's context),
    over its annotated pixels (all but those of `ignore_label`)."""
    read = block.read_box(work.context, work.volume)
    own = block.box.relative_to(read)
    proposal_read = np.asarray(open_array(str(Path(segmentation) / ome_zarr.LEVEL0), work.run_key)[read.slices()])
    proposal = proposal_read[own]
    truth = truth_ids[work.scratch(TRUTH)[block.box.slices()]]
    sweeps = [ids[work.scratch(f"sweep-{i}")[block.box.slices()]] for i, ids in enumerate(sweep_ids)]
    predicted_cell = read_cell_probability(probabilities, block.box, work) > threshold
    true_cell = Mask(labels, "labels", ignore_label=ignore_label).read(block.box, work)
    counted = Annotation(labels, ignore_label).read(block.box, work)
    tallies = {}
    for index, z in enumerate(range(block.box.start[0], block.box.stop[0])):
        thinned = thin_boundaries(proposal_read[index + own[0].start])[own[1:]]
        tally = Tally(section_table(proposal[index], truth[index], z), section_table(thinned, truth[index], z),
                      [section_table(s[index], truth[index], z) for s in sweeps],
                      int(np.count_nonzero((predicted_cell[index] != true_cell[index]) & counted[index])),
                      int(np.count_nonzero(counted[index])))
        membrane, true_membrane = ~predicted_cell[index] & counted[index], ~true_cell[index] & counted[index]
        tally.membrane = {"predicted": int(membrane.sum()), "true": int(true_membrane.sum()),
                          "both": int((membrane & true_membrane).sum())}
        tallies[z] = tally
    if warping:  # warped over the block and its context, errors counted in the block
        predicted_around = read_cell_probability(probabilities, read, work) > threshold
        true_around = Mask(labels, "labels", ignore_label=ignore_label).read(read, work)
        for index, z in enumerate(range(block.box.start[0], block.box.stop[0])):
            errors = metrics.warping_error(predicted_around[index], true_around[index])[1]
            tallies[z].warped = int(np.count_nonzero(errors[own[1:]] & counted[index]))
    return tallies


def intensity_histograms(block: Block, work: Work, raw: str, labels: str, low: float, step: float,
                         bins: int, ignore_label: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Worker: histograms of the raw intensity levels (see `_levels`) on the annotated membrane and cells of a
    block."""
    values = open_array(str(Path(raw) / ome_zarr.LEVEL0), work.run_key)[block.box.slices()]
    levels = _levels(np.asarray(values), low, step)
    true_cell = Mask(labels, "labels", ignore_label=ignore_label).read(block.box, work)
    counted = Annotation(labels, ignore_label).read(block.box, work)
    return (np.bincount(levels[~true_cell & counted], minlength=bins),
            np.bincount(levels[true_cell & counted], minlength=bins))


def intensity_range(block: Block, work: Work, raw: str) -> tuple[float, float]:
    values = open_array(str(Path(raw) / ome_zarr.LEVEL0), work.run_key)[block.box.slices()]
    return float(np.min(values)), float(np.max(values))


def baseline_block(block: Block, work: Work, truth_ids: np.ndarray,
                   baseline_ids: np.ndarray) -> dict[int, metrics.Contingency]:
    """Worker: per section of a block, the contingency table of the baseline's components against the
    ground-truth cells."""
    truth = truth_ids[work.scratch(TRUTH)[block.box.slices()]]
    proposal = baseline_ids[work.scratch("baseline")[block.box.slices()]]
    return {z: section_table(proposal[index], truth[index], z)
            for index, z in enumerate(range(block.box.start[0], block.box.stop[0]))}


def _levels(values: np.ndarray, low: float, step: float) -> np.ndarray:
    """Integer raw is its own histogram bins; float raw is binned in `step`s from `low`."""
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64)
    return np.round((values - low) / step).astype(np.int64)


@checked_stage
def evaluate(segmentation_path: str | os.PathLike, probabilities_path: str | os.PathLike,
             labels_path: str | os.PathLike, output: str | os.PathLike, *, sections: list[int] | None,
             threshold: float, thresholds: list[float], warping: bool, baseline_raw: str | None,
             block: list[int], context: list[int], cluster_settings: dict[str, Any],
             stall_timeout_s: float = 1800, ignore_label: int | None = None) -> dict:
    """Score the segmentation against the labels; write metrics.json and <name>_sections.csv; return the metrics.

    Args:
        sections: [first, last) sections to score; None: all.
        threshold: cell probability above which a pixel counts as cell for the
            pixel error, the warping error and the membrane Dice/Jaccard.
        thresholds: the extra sweep: threshold + connected components of the
            probabilities at each (the challenge's Rand error is 1 - its best
            V_Rand); empty: no sweep.
        warping: compute the warping error (compiled; topology checked per block and its context).
        baseline_raw: a raw image whose best global threshold is scored too; None: no baseline.
        block: (z, y, x) block of one task; z is always one section.
        context: (z, y, x) voxels a block reads around it for thinning boundaries and warping.
        cluster_settings: the Dask cluster (see `cluster.connect`).
        stall_timeout_s: stop when no block finishes for this long.
        ignore_label: the label value of unannotated voxels: every figure counts the annotated voxels only
            (the threshold sweep and the baseline label components within them); None: all are annotated.
    """
    started = provenance.now()
    segmentation, labels = ome_zarr.open_input(segmentation_path), ome_zarr.open_input(labels_path)
    check_ignore_label(ignore_label, labels.dtype, str(labels_path))
    probabilities = ome_zarr.open_input(probabilities_path)
    for path, array in ((segmentation_path, segmentation), (probabilities_path, probabilities)):
        if array.shape[-3:] != labels.shape:
            raise InputError(f"{path}: shape {array.shape} does not match the labels' {labels.shape}")
    first, last = sections or (0, labels.shape[0])
    if not 0 <= first < last <= labels.shape[0]:
        raise ConfigError(f"evaluation sections [{first}, {last}) do not fit a volume of {labels.shape[0]} sections")
    chunks = chunk_files.stored_unit(labels)
    block_shape = aligned_block_shape((1, *block[1:]), chunks, labels.shape)
    inputs = {"segmentation": str(segmentation_path), "probabilities": str(probabilities_path),
              "labels": str(labels_path), "baseline_raw": baseline_raw}
    fingerprints = provenance.fingerprint_inputs(inputs)
    settings = {"sections": [first, last], "threshold": threshold, "thresholds": thresholds, "warping": warping,
                "block": list(block_shape), "context": list(context), "ignore_label": ignore_label}
    key = records.run_key(inputs=fingerprints, settings=settings)  # workers cache opened arrays by it
    work_dir = Path(str(output) + ".work")
    with outputs.output_lock(output):
        outputs.remove(work_dir)
        work = Work(str(work_dir), labels.shape, block_shape, (0, *context[1:]), key, (first, last))
        with cluster.connect(**cluster_settings) as client:
            runner = Runner(client, work, stall_timeout_s)
            within = Annotation(str(labels_path), ignore_label) if ignore_label is not None else None
            truth = Mask(str(labels_path), "labels", ignore_label=ignore_label)
            truth_graph, truth_of = components(runner, TRUTH, truth, "2d", 4, chunks)
            truth_ids = truth_graph.lookups(truth_of + 1)
            sweep_ids = []
            for i, t in enumerate(thresholds):
                sweep = Mask(str(probabilities_path), "probability", t, within=within)
                graph, component_of = components(runner, f"sweep-{i}", sweep, "2d", 4, chunks)
                sweep_ids.append(graph.lookups(component_of + 1))
            per_block = [{"truth_ids": truth_ids[i], "sweep_ids": [ids[i] for ids in sweep_ids]}
                         for i in range(len(work.grid))]
            scored = runner.completed("evaluate blocks", score_block, work.grid, per_block,
                                      segmentation=str(segmentation_path), probabilities=str(probabilities_path),
                                      labels=str(labels_path), threshold=threshold, warping=warping,
                                      ignore_label=ignore_label)
            sections_done = _fold_sections(scored, work.grid, Tally.summed)
            baseline = _baseline(runner, baseline_raw, str(labels_path), truth_ids, chunks, ignore_label) \
                if baseline_raw else None
        outputs.remove(work_dir)
    result = _summary(sections_done, first, last, threshold, thresholds, warping)
    made = ome_zarr.image_attrs(segmentation_path).get("provenance", {})  # what segment chose, e.g. a tuned threshold
    result["segmentation"] = {**made.get("settings", {}), **made.get("blocks", {})}
    if baseline:
        result["baseline_raw_threshold"] = baseline
    result["provenance"] = provenance.record("evaluate", settings, inputs, started, fingerprints, run_key=key)
    _write(output, result, result.pop("rows"))
    return result


def _fold_sections(scored: Iterator[tuple[int, dict[int, Any]]], blocks: list[Block],
                   finish: Callable[[Any], Any]) -> dict[int, Any]:
    """Each section's counts (a `Tally` or a `metrics.Contingency`), merged from its blocks' as they finish and
    reduced by `finish` (to their sums) once its last block is in, so the client holds the tables of unfinished
    sections only."""
    blocks_left = Counter(z for block in blocks for z in range(block.box.start[0], block.box.stop[0]))
    open_sections: dict[int, Any] = {}
    finished: dict[int, Any] = {}
    for _, per_section in scored:
        for z, counts in per_section.items():
            open_sections[z] = open_sections[z].merge(counts) if z in open_sections else counts
            blocks_left[z] -= 1
            if blocks_left[z] == 0:
                finished[z] = finish(open_sections.pop(z))
    return finished


def _summary(per_section: dict[int, Tally], first: int, last: int, threshold: float, thresholds: list[float],
             warping: bool) -> dict[str, Any]:
    """The pooled and per-section metrics from the finished sections' tallies."""
    pooled = Tally()
    rows = []
    for z in range(first, last):
        tally = per_section[z]
        row = {"section": z, "pixel_error": tally.mismatched / tally.pixels, **scores(tally.table),
               **tally.membrane_scores()}
        if warping:
            row["warping_error"] = tally.warped / tally.pixels
        rows.append(row)
        pooled.merge(tally)
    model = {"pixel_error": pooled.mismatched / pooled.pixels, **scores(pooled.table),
             "v_rand_thinned": metrics.rand_scores(pooled.thinned)["v_rand"], **pooled.membrane_scores()}
    if warping:
        model["warping_error"] = pooled.warped / pooled.pixels
    result: dict[str, Any] = {"sections": [first, last], "threshold": threshold, "model": model, "rows": rows}
    if thresholds:
        curve = [{"threshold": t, **{k: v for k, v in scores(table).items() if k in ("v_rand", "v_info")}}
                 for t, table in zip(thresholds, pooled.sweep)]
        result["sweep"] = curve
        model["rand_error_best_threshold"] = 1 - max(point["v_rand"] for point in curve)
    return result


def _write(output: str | os.PathLike, result: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    with outputs.atomic_output(sections_table_path(output)) as partial, open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SECTION_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with outputs.atomic_output(output) as partial:
        partial.write_text(json.dumps(result, indent=2) + "\n")


def _baseline(runner: Runner, raw_path: str, labels: str, truth_ids: list[np.ndarray],
              chunks: tuple[int, ...], ignore_label: int | None) -> dict[str, float]:
    """Best global raw threshold (chosen on these sections: an upper bound for thresholding), then components."""
    raw = ome_zarr.open_input(raw_path)
    if raw.shape != runner.work.volume:
        raise InputError(f"{raw_path}: raw shape {raw.shape} differs from the labels' {runner.work.volume}")
    if np.issubdtype(raw.dtype, np.integer):
        low, step, bins = 0.0, 1.0, int(np.iinfo(raw.dtype).max) + 1
    else:  # FLOAT_BINS levels (as preprocess) between the evaluated sections' minimum and maximum
        ranges = runner.map("baseline range", intensity_range, runner.work.grid, raw=raw_path)
        low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
        step, bins = max(high - low, 1e-6) / (FLOAT_BINS - 1), FLOAT_BINS
    histograms = runner.map("baseline histograms", intensity_histograms, runner.work.grid, raw=raw_path,
                            labels=labels, low=low, step=step, bins=bins, ignore_label=ignore_label)
    membrane = np.sum([h[0][:bins] for h in histograms], axis=0)
    cell = np.sum([h[1][:bins] for h in histograms], axis=0)
    errors = metrics.threshold_errors(membrane, cell)
    best = int(np.argmin(errors))
    cut = low + (best - 0.5) * step  # level >= best
    within = Annotation(labels, ignore_label) if ignore_label is not None else None
    graph, component_of = components(runner, "baseline", Mask(raw_path, "intensity", cut, within=within), "2d", 4,
                                     chunks)
    baseline_ids = graph.lookups(component_of + 1)
    tables = runner.completed("baseline blocks", baseline_block, runner.work.grid,
                              [{"truth_ids": t, "baseline_ids": b} for t, b in zip(truth_ids, baseline_ids)])
    pooled = functools.reduce(metrics.Sums.merge, _fold_sections(tables, runner.work.grid, metrics.sums).values())
    return {"threshold": float(low + best * step), "pixel_error": float(errors[best]), **scores(pooled)}
