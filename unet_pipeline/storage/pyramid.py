"""Multiscale pyramids: which axes to halve at each level, and the downsampling of one block.

EM voxels are anisotropic (often 50 x 4 x 4 nm): y and x are halved first
and z joins once the voxels are near isotropic; an axis that fits in one
chunk is left alone. Intensities
(raw, probabilities, weights) are averaged; label images (labels,
segmentations) take the most frequent label of each block (the smallest one
on a tie), so no label is invented.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from ..core.geometry import ceil_division

METHODS = ("mean", "mode")


def level_factors(voxel_size: Sequence[float], shape: Sequence[int], chunks: Sequence[int],
                  max_levels: int = 8) -> list[tuple[int, ...]]:
    """Per-level (z, y, x) factors relative to the previous level, until the image fits one chunk.

    Of the axes that still span more than one chunk, those whose voxel size is
    within 1.5x of the finest are halved: y and x first on anisotropic EM, then
    all three once the voxels are near isotropic.
    """
    size, extent = list(map(float, voxel_size)), list(shape)
    factors: list[tuple[int, ...]] = []
    while len(factors) < max_levels:
        splittable = [n > c for n, c in zip(extent, chunks)]
        if not any(splittable):
            break
        finest = min(s for s, ok in zip(size, splittable) if ok)
        step = tuple(2 if ok and s <= finest * 1.5 else 1 for s, ok in zip(size, splittable))
        factors.append(step)
        size = [s * f for s, f in zip(size, step)]
        extent = list(ceil_division(extent, step))
    return factors


def downsample(block: np.ndarray, factors: Sequence[int], method: str) -> np.ndarray:
    """Downsample a block by integer `factors` per axis; a ragged edge is padded by repeating it.

    'mean' rounds integer types to the nearest value (halves up); 'mode' keeps
    the most frequent value. An all-zero block (what a tissue mask leaves
    outside the tissue) is zero at every level, for either method.
    """
    if method not in METHODS:
        raise ValueError(f"downsampling method must be one of {METHODS}, got {method!r}")
    if not block.any():
        return np.zeros(tuple(ceil_division(block.shape, factors)), block.dtype)
    pad = [(0, -n % f) for n, f in zip(block.shape, factors)]
    if any(after for _, after in pad):
        block = np.pad(block, pad, mode="edge")
    # one strided view per position inside a block: the k values of every block, without reshaping copies
    views = [block[tuple(slice(o, None, f) for o, f in zip(offset, factors))]
             for offset in itertools.product(*(range(f) for f in factors))]
    return _mean(views, block.dtype) if method == "mean" else _mode(views)


def _mean(views: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):  # a sum of up to 8 values of 16 bits fits 32
        wide = np.int64 if np.dtype(dtype).itemsize > 2 else np.int32
        total = sum(view.astype(wide) for view in views)
        return ((2 * total + len(views)) // (2 * len(views))).astype(dtype)
    total = sum(view.astype(np.float32 if dtype == np.float32 else np.float64) for view in views)
    return (total / len(views)).astype(dtype)


def _mode(views: list[np.ndarray]) -> np.ndarray:
    """Most frequent value across the views, element by element (smallest on a tie); no sort, no stacking."""
    counts = [sum((view == other).astype(np.uint8) for other in views) for view in views]
    best = np.maximum.reduce(counts)
    dtype = views[0].dtype
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else np.inf
    return np.minimum.reduce([np.where(count == best, view, top) for view, count in zip(views, counts)]).astype(dtype)
