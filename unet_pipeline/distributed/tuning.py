"""Choose the agglomeration's merge threshold on sections with labels (the validation sections).

The best threshold differs between stacks, so it is measured, not set by
hand: each candidate's agglomeration of the fragment graph is numbered and
scored (foreground-restricted Rand error, as `evaluate` scores) on the
given sections, blockwise; the lowest error wins (the first on ties).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from ..segmentation import agglomerate, metrics
from ..segmentation.metrics import section_table
from .blocks import Block
from .blockwise import Mask, PieceGraph, Runner, Work, components

TRUTH = "truth"  # the scratch name of the ground-truth cells' components


def score_candidates(block: Block, work: Work, source: str, truth_ids: np.ndarray,
                     candidate_ids: list[np.ndarray]) -> list[metrics.Contingency]:
    """Worker: per candidate, the contingency table of its segments against the ground-truth cells of a block."""
    pieces = work.scratch(source)[block.box.slices()]
    truth = truth_ids[work.scratch(TRUTH)[block.box.slices()]]
    tables = []
    for ids in candidate_ids:
        proposal = ids[pieces]
        table = metrics.Contingency()
        for index, z in enumerate(range(block.box.start[0], block.box.stop[0])):
            table.merge(section_table(proposal[index], truth[index], z))
        tables.append(table)
    return tables


def choose_merge_threshold(runner: Runner, graph: PieceGraph, graph_blocks: list[Block],
                           solve: Callable[[float], np.ndarray], candidates: list[float], min_size: int,
                           labels: str, sections: list[int], source: str, chunks: tuple[int, ...],
                           ignore_label: int | None = None) -> tuple[float, list[dict[str, Any]]]:
    """The candidate whose segmentation (`solve(threshold)`: the segment of each fragment of `graph`, the piece
    graph of `graph_blocks`, which hold `sections`) has the lowest Rand error on `sections` of `labels` (their
    annotated voxels: all but those of `ignore_label`), and every candidate's errors."""
    # the truth of every block, those outside a tissue mask too: their cells count as missed, as they would
    # with the probabilities zeroed there
    work = dataclasses.replace(runner.work, sections=(sections[0], sections[1]), selection=None)
    tuning = Runner(runner.client, work, runner.stall_timeout_s)
    truth_graph, truth_of = components(tuning, TRUTH, Mask(labels, "labels", ignore_label=ignore_label), "2d", 4,
                                       chunks)
    truth_ids = truth_graph.lookups(truth_of + 1)
    lookups = [graph.lookups(agglomerate.consecutive(solve(t)[graph.fragment_of_piece], graph.sizes, min_size))
               for t in candidates]
    blocks = work.grid
    position = {block.index: i for i, block in enumerate(graph_blocks)}
    per_block = [{"truth_ids": truth_ids[i], "candidate_ids": [ids[position[block.index]] for ids in lookups]}
                 for i, block in enumerate(blocks)]
    pooled = [metrics.Contingency() for _ in candidates]
    for tables in tuning.map("tune merge threshold", score_candidates, blocks, per_block, source=source):
        for total, table in zip(pooled, tables):
            total.merge(table)
    curve = [{"merge_threshold": t, "rand_error": metrics.rand_scores(table)["rand_error"],
              "info_error": metrics.info_scores(table)["info_error"]} for t, table in zip(candidates, pooled)]
    best = min(curve, key=lambda point: point["rand_error"])
    print(f"segment: merge threshold {best['merge_threshold']} (Rand error {best['rand_error']:.4f} on sections "
          f"{sections[0]}-{sections[1] - 1})", flush=True)
    return best["merge_threshold"], curve
