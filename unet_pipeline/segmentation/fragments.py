"""Fragments and seeded floods of a block of cell probabilities (numpy in, numpy out).

Fragments (over-segmentation for agglomeration): seeds at the maxima of the
distance transform of the cell interior (p > threshold), a watershed of the
boundary probability 1 - p from them over every voxel. In '2d' each
section on its own; in '3d' the distance is measured in physical units
(anisotropic voxels respected) and the watershed floods through sections.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from .labeling import label_components


def distance_maxima(interior: np.ndarray, seed_distance: int, mode: str,
                    voxel_size: Sequence[float]) -> np.ndarray:
    """Seed mask: voxels of `interior` whose distance to the boundary is the largest within `seed_distance`
    pixels (in y and x; in z the same physical reach, at least one section in '3d')."""
    if mode == "2d":
        distance = np.stack([ndimage.distance_transform_edt(section) for section in interior]) \
            if interior.any() else np.zeros(interior.shape)
        size = (1, 2 * seed_distance + 1, 2 * seed_distance + 1)
    else:
        distance = ndimage.distance_transform_edt(interior, sampling=voxel_size) if interior.any() \
            else np.zeros(interior.shape)
        reach_z = max(1, round(seed_distance * voxel_size[1] / voxel_size[0]))
        size = (2 * reach_z + 1, 2 * seed_distance + 1, 2 * seed_distance + 1)
    return (distance > 0) & (distance == ndimage.maximum_filter(distance, size=size, mode="constant"))


def watershed_fragments(cell: np.ndarray, threshold: float, seed_distance: int, mode: str,
                        voxel_size: Sequence[float]) -> np.ndarray:
    """Fragments (uint32 ids; 0 only in sections without any seed) of a (z, y, x) cell-probability block."""
    seeds, _ = label_components(distance_maxima(cell > threshold, seed_distance, mode, voxel_size), mode,
                                8 if mode == "2d" else 26)
    boundary = 1.0 - cell
    if mode == "3d":
        return watershed(boundary, markers=seeds).astype(np.uint32)
    return np.stack([watershed(b, markers=s) for b, s in zip(boundary, seeds)]).astype(np.uint32)


def seeded_flood(cell: np.ndarray, seeds: np.ndarray, threshold: float, mode: str) -> np.ndarray:
    """Watershed of 1 - p from `seeds` (any integer ids) inside p > threshold; 0 elsewhere and where no seed
    reaches. '2d' floods each section on its own."""
    mask = cell > threshold
    if mode == "3d":
        return watershed(1.0 - cell, markers=seeds, mask=mask)
    return np.stack([watershed(1.0 - c, markers=s, mask=m) for c, s, m in zip(cell, seeds, mask)])
