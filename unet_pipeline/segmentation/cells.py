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

from ..core.errors import InputError
from . import agglomerate


def without_ignored(labels: np.ndarray, ignore_label: int | None) -> np.ndarray:
    """Labels with the unannotated voxels (value `ignore_label`) made 0: neither cell nor a cell's neighbour
    (a cell next to them is not split from them); `labels` itself when nothing is ignored."""
    return labels if ignore_label is None else np.where(labels == ignore_label, 0, labels)


def annotated(labels: np.ndarray, ignore_label: int | None) -> np.ndarray:
    """Where the labels say something (True), as opposed to `ignore_label` (not annotated)."""
    return np.ones(labels.shape, bool) if ignore_label is None else labels != ignore_label


def check_ignore_label(ignore_label: int | None, dtype: Any, where: str) -> None:
    """Refuse an `ignore_label` that labels of `dtype` (read from `where`) cannot hold, or that is 0 (membrane)."""
    if ignore_label is None:
        return
    info = np.iinfo(np.dtype(dtype))
    if not 0 < ignore_label <= info.max:
        raise InputError(f"{where}: ignore_label {ignore_label} cannot mark unannotated voxels of labels of dtype "
                         f"{np.dtype(dtype)} (expected 1 to {info.max}; 0 is membrane)")


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
    A first pass labels each slab on its own and lists the pairs of ids that
    meet across slab faces; their union (`agglomerate.union`, as the blockwise
    components join blocks) gives every slab's id its component, so `region`
    returns any range of sections with the same global ids, whatever range is
    asked for.
    """

    def __init__(self, mask: Callable[[int, int], np.ndarray], depth: int, slab: int) -> None:
        self.mask, self.depth, self.slab = mask, depth, slab
        self.starts = list(range(0, depth, slab))
        self.offsets: list[int] = []
        pairs = [np.zeros((0, 2), np.int64)]
        previous_last, total = None, 0
        for start in self.starts:
            local = self._local(start)
            self.offsets.append(total)
            first = np.where(local[0] > 0, local[0] + total, 0)
            if previous_last is not None:
                touching = (previous_last > 0) & (first > 0)
                pairs.append(np.stack([previous_last[touching], first[touching]], axis=1))
            previous_last = np.where(local[-1] > 0, local[-1] + total, 0)
            total += int(local.max())
        edges = np.unique(np.concatenate(pairs), axis=0)
        self.roots = agglomerate.union(edges, np.zeros((len(edges), 4), np.int64), total + 1, 0)  # 0: background

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

