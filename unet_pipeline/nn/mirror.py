"""Mirror extrapolation: read any box of a volume, reflecting at its borders.

The reflection is a global function of the coordinate (period 2 * (n - 1),
numpy's 'reflect' mode applied as often as needed), so a tile read here holds
exactly the values that the whole mirror-padded volume holds at the same
place, however far the box reaches outside, even past a border more than
once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.geometry import Box


def reflect_coordinates(start: int, stop: int, size: int) -> np.ndarray:
    """Source indices in [0, size) for coordinates start..stop-1 under repeated reflection."""
    coords = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(coords)
    period = 2 * (size - 1)
    coords = np.mod(coords, period)
    return np.where(coords < size, coords, period - coords)


def read_mirrored(array: Any, box: Box) -> np.ndarray:
    """The values of `array` (anything sliceable: numpy, zarr) inside `box`, mirrored outside.

    Only the bounding box of the needed source voxels is read, once.
    """
    if len(box.start) != array.ndim:
        raise ValueError(f"box of rank {len(box.start)} for array of rank {array.ndim}")
    indices = [reflect_coordinates(a, b, n) for a, b, n in zip(box.start, box.stop, array.shape)]
    read = tuple(slice(int(i.min()), int(i.max()) + 1) for i in indices)
    block = np.asarray(array[read])
    local = [i - s.start for i, s in zip(indices, read)]
    if all(np.array_equal(i, np.arange(len(i))) for i in local):
        return block
    return block[np.ix_(*local)]
