"""Region adjacency graph of fragments with exactly mergeable boundary statistics (numpy in, numpy out).

A contact is a pair of face-neighbouring voxels of two different fragments;
its value is the mean boundary probability of its two voxels. Each edge
(fragment pair) keeps the count, sum, minimum and maximum of its contact
values. Values are held as integers (boundary probability in units of
2**-24, contact values in units of 2**-25), so sums, minima and maxima of
blocks merge exactly, in any order: a graph gathered block by block equals
the graph of the whole volume bit for bit. Every float16 probability is a
whole number of these units; other stored values are rounded to them.
"""

from __future__ import annotations

import numpy as np

from .labeling import contacts

UNIT = 2**24  # boundary probability units per 1.0
COUNT, SUM, MIN, MAX = range(4)  # columns of an edge table's statistics


def quantize(boundary: np.ndarray) -> np.ndarray:
    """Boundary probabilities in [0, 1] as int64 units of 2**-24."""
    return np.rint(np.asarray(boundary, dtype=np.float64) * UNIT).astype(np.int64)


def block_edges(fragments: np.ndarray, boundary_units: np.ndarray, own: tuple[slice, ...],
                offsets: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """The edges and statistics of the contacts owned by the region `own` of a fragment block.

    `fragments` (ids, 0 = none) and `boundary_units` (see `quantize`) cover the
    owned region and at least one voxel beyond it on the forward side of each
    offset, where the volume goes on. Returns (uv (E, 2) uint64 with u < v,
    stats (E, 4) int64: count, sum, min, max of the contact values).
    """
    us, vs, values = [], [], []
    for first, second in contacts(fragments, own, offsets):
        a, b = fragments[first], fragments[second]
        touching = (a != b) & (a > 0) & (b > 0)
        us.append(a[touching])
        vs.append(b[touching])
        values.append(boundary_units[first][touching] + boundary_units[second][touching])
    u, v = np.concatenate(us).astype(np.uint64), np.concatenate(vs).astype(np.uint64)
    value = np.concatenate(values)
    ones = np.ones(len(value), np.int64)
    return reduce_edges(np.stack([np.minimum(u, v), np.maximum(u, v)], axis=1),
                        np.stack([ones, value, value, value], axis=1))


def reduce_edges(uv: np.ndarray, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the same edge combined (counts and sums added, minima and maxima kept), sorted by (u, v)."""
    if len(uv) == 0:
        return np.zeros((0, 2), np.uint64), np.zeros((0, 4), np.int64)
    order = np.lexsort((uv[:, 1], uv[:, 0]))
    uv, stats = uv[order], stats[order]
    starts = np.flatnonzero(np.r_[True, np.any(uv[1:] != uv[:-1], axis=1)])
    merged = np.stack([np.add.reduceat(stats[:, COUNT], starts), np.add.reduceat(stats[:, SUM], starts),
                       np.minimum.reduceat(stats[:, MIN], starts), np.maximum.reduceat(stats[:, MAX], starts)],
                      axis=1)
    return uv[starts], merged


def merge_tables(tables: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One edge table from the tables of several blocks."""
    if not tables:
        return reduce_edges(np.zeros((0, 2), np.uint64), np.zeros((0, 4), np.int64))
    return reduce_edges(np.concatenate([uv for uv, _ in tables]), np.concatenate([s for _, s in tables]))


def mean_boundary(stats: np.ndarray) -> np.ndarray:
    """Each edge's mean boundary probability along its contacts."""
    return stats[:, SUM] / (2.0 * UNIT * np.maximum(stats[:, COUNT], 1))
