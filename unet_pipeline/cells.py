"""Cells of a label section: the instances a weight map or a metric is computed on."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def separate_cells(section: np.ndarray) -> np.ndarray:
    """Cell ids of a (y, x) label section: touching instances are split by background.

    Pixels with a 4-neighbour of another non-zero id become background, then
    connected components are numbered 1..n.
    """
    touching = np.zeros(section.shape, dtype=bool)
    for axis in range(section.ndim):
        a = [slice(None)] * section.ndim
        b = [slice(None)] * section.ndim
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        differ = (section[tuple(a)] != section[tuple(b)]) & (section[tuple(a)] > 0) & (section[tuple(b)] > 0)
        touching[tuple(a)] |= differ
        touching[tuple(b)] |= differ
    cells, _ = ndimage.label((section > 0) & ~touching)
    return cells
