"""Cells of a label image: the instances a weight map or a metric is computed on.

Labels are 0 = membrane/background, >0 = cell (binary or instance ids).
Touching instances of different id are split by making their shared border
background (the paper's separation border); cells are then the connected
components (4-/6-connected) of what remains, per section (2D) or in 3D.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from scipy import ndimage


def cell_mask(labels: np.ndarray) -> np.ndarray:
    """Foreground without the pixels where two instances of different id touch."""
    touching = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        a = [slice(None)] * labels.ndim
        b = [slice(None)] * labels.ndim
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        first, second = labels[tuple(a)], labels[tuple(b)]
        differ = (first != second) & (first > 0) & (second > 0)
        touching[tuple(a)] |= differ
        touching[tuple(b)] |= differ
    return (labels > 0) & ~touching


def separate_cells(labels: np.ndarray) -> np.ndarray:
    """Cell ids 1..n of a label section (or volume): connected components of `cell_mask`."""
    cells, _ = ndimage.label(cell_mask(labels))
    return cells


class SlabComponents:
    """Connected 3D components (6-connected) of a mask too large for memory, streamed in slabs of sections.

    `mask(first, last)` returns the boolean mask of sections [first, last).
    A first pass labels each slab on its own and joins the components that
    meet across slab faces (union-find); `region` then returns any range of
    sections with the same global ids, whatever range is asked for.
    """

    def __init__(self, mask: Callable[[int, int], np.ndarray], depth: int, slab: int) -> None:
        self.mask, self.depth, self.slab = mask, depth, slab
        self.starts = list(range(0, depth, slab))
        self.offsets: list[int] = []
        parents: list[int] = [0]
        previous_last = None
        total = 0
        for start in self.starts:
            local = self._local(start)
            self.offsets.append(total)
            count = int(local.max())
            parents.extend(range(total + 1, total + count + 1))
            first = np.where(local[0] > 0, local[0] + total, 0)
            if previous_last is not None:
                touching = (previous_last > 0) & (first > 0)
                for a, b in set(zip(previous_last[touching].tolist(), first[touching].tolist())):
                    _union(parents, a, b)
            previous_last = np.where(local[-1] > 0, local[-1] + total, 0)
            total += count
        self.roots = np.array([_find(parents, i) for i in range(total + 1)], dtype=np.int64)

    def _local(self, start: int) -> np.ndarray:
        cells, _ = ndimage.label(self.mask(start, min(start + self.slab, self.depth)))
        return cells

    def region(self, first: int, last: int) -> np.ndarray:
        """Global component ids of sections [first, last)."""
        parts = []
        for index, start in enumerate(self.starts):
            stop = start + self.slab
            if stop <= first or start >= last:
                continue
            local = self._local(start)
            ids = np.where(local > 0, self.roots[local + self.offsets[index]], 0)
            parts.append(ids[max(first - start, 0) : last - start])
        return np.concatenate(parts)


def volume_cells(labels: Any, slab: int) -> SlabComponents:
    """Connected 3D cells of a label volume, streamed: each slab's separation border sees one more section."""
    depth = labels.shape[0]

    def mask(first: int, last: int) -> np.ndarray:
        lo, hi = max(first - 1, 0), min(last + 1, depth)
        return cell_mask(np.asarray(labels[lo:hi]))[first - lo : first - lo + last - first]

    return SlabComponents(mask, depth, slab)


def _find(parents: list[int], i: int) -> int:
    while parents[i] != i:
        parents[i] = parents[parents[i]]
        i = parents[i]
    return i


def _union(parents: list[int], a: int, b: int) -> None:
    ra, rb = _find(parents, a), _find(parents, b)
    if ra != rb:
        parents[max(ra, rb)] = min(ra, rb)
