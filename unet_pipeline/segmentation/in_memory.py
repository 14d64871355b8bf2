"""The segment stage's methods on a cell-probability volume held in memory (numpy in, numpy out).

`segment` runs them blockwise on a cluster, for volumes of any size; these
are the same array functions on one array, for what is small by nature:
training's validation sections and the single-process baselines of the
benchmarks. The agglomeration yields one segmentation per candidate merge
threshold at the cost of one fragmentation and one region graph.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from . import agglomerate
from .fragments import seeded_flood, watershed_fragments
from .labeling import FACE_CONNECTIVITY, forward_offsets, label_components
from .region_graph import block_edges, quantize
from .settings import Settings


def segmentations(cell: np.ndarray, settings: Settings, voxel_size: Sequence[float],
                  merge_thresholds: Sequence[float]) -> Iterator[tuple[float | None, np.ndarray]]:
    """(merge threshold, labels) of a (z, y, x) cell probability by `settings.method`: one pair per merge
    threshold for 'agglomerate', else one pair with None. Labels are uint32, 0 = none."""
    if settings.method == "components":
        yield None, label_components(cell > settings.threshold, settings.mode, settings.connectivity)[0]
    elif settings.method == "watershed":
        seeds = label_components(cell > settings.seed_threshold, settings.mode, settings.connectivity)[0]
        yield None, seeded_flood(cell, seeds.astype(np.int64), settings.threshold, settings.mode).astype(np.uint32)
    else:
        yield from agglomerations(cell, settings, voxel_size, merge_thresholds)


def agglomerations(cell: np.ndarray, settings: Settings, voxel_size: Sequence[float],
                   merge_thresholds: Sequence[float]) -> Iterator[tuple[float, np.ndarray]]:
    """Watershed fragments, their region graph, and its agglomeration at each merge threshold."""
    fragments = watershed_fragments(cell, settings.threshold, settings.seed_distance, settings.mode, voxel_size)
    whole = tuple(slice(0, n) for n in cell.shape)
    uv, stats = block_edges(fragments.astype(np.uint64), quantize(1.0 - cell.astype(np.float64)), whole,
                            forward_offsets(settings.mode, FACE_CONNECTIVITY[settings.mode]))
    nodes, sizes = int(fragments.max()), np.bincount(fragments.ravel())[1:]
    for threshold in merge_thresholds:
        segment_of = agglomerate.solve(settings.agglomeration, uv.astype(np.int64) - 1, stats, nodes, threshold)
        final = agglomerate.consecutive(segment_of, sizes, settings.min_size)
        yield threshold, np.concatenate([[0], final]).astype(np.uint32)[fragments]
