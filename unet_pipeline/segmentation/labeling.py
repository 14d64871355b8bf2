"""Connected components of a block and the contacts between labelled voxels (numpy in, numpy out).

`mode` '2d' connects voxels within a section only (what ISBI scores); '3d'
connects through sections too. Connectivity: 4 or 8 in 2D; 6, 18 or 26 in
3D (face, face + edge, face + edge + corner neighbours).
"""

from __future__ import annotations

import itertools
from typing import Iterator

import cc3d
import numpy as np

from ..core.errors import ConfigError

CONNECTIVITIES = {"2d": (4, 8), "3d": (6, 18, 26)}
FACE_CONNECTIVITY = {"2d": 4, "3d": 6}


def check_connectivity(mode: str, connectivity: int) -> None:
    if mode not in CONNECTIVITIES:
        raise ConfigError(f"segment.mode must be '2d' or '3d', got {mode!r}")
    if connectivity not in CONNECTIVITIES[mode]:
        raise ConfigError(f"segment.connectivity must be one of {CONNECTIVITIES[mode]} in {mode}, got {connectivity}")


def forward_offsets(mode: str, connectivity: int) -> list[tuple[int, int, int]]:
    """The (z, y, x) neighbour offsets of a connectivity whose first non-zero component is positive:
    each neighbouring pair of voxels is one voxel plus exactly one of these."""
    check_connectivity(mode, connectivity)
    reach = {4: 1, 8: 2, 6: 1, 18: 2, 26: 3}[connectivity]  # how many axes an offset may move along
    offsets = []
    for offset in itertools.product((-1, 0, 1), repeat=3):
        moved = sum(map(abs, offset))
        if moved == 0 or moved > reach or (mode == "2d" and offset[0] != 0):
            continue
        if next(o for o in offset if o) > 0:
            offsets.append(offset)
    return offsets


def label_components(mask: np.ndarray, mode: str, connectivity: int) -> tuple[np.ndarray, int]:
    """Connected components (ids 1..n in raster order, uint32; 0 = background) of a (z, y, x) mask."""
    check_connectivity(mode, connectivity)
    mask = np.ascontiguousarray(mask, dtype=bool)
    if mode == "3d":
        labels, count = cc3d.connected_components(mask, connectivity=connectivity, return_N=True, out_dtype=np.uint32)
        return labels, int(count)
    labels = np.zeros(mask.shape, dtype=np.uint32)
    total = 0
    for z, section in enumerate(mask):
        section_labels, count = cc3d.connected_components(section, connectivity=connectivity, return_N=True,
                                                          out_dtype=np.uint32)
        labels[z] = np.where(section_labels > 0, section_labels + np.uint32(total), 0)
        total += int(count)
    return labels, total


def contacts(labels: np.ndarray, own: tuple[slice, ...],
             offsets: list[tuple[int, int, int]]) -> Iterator[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """For each offset, the slices (first, second) of `labels` that pair every voxel p of the owned region
    `own` with its neighbour p + offset inside `labels` (a block read with a margin around `own`).

    Every neighbouring pair of the volume is owned by exactly one block: the one holding its first voxel.
    """
    for offset in offsets:
        first, second = [], []
        for axis, (region, step) in enumerate(zip(own, offset)):
            low, high = max(region.start, -step), min(region.stop, labels.shape[axis] - step)
            first.append(slice(low, max(high, low)))
            second.append(slice(low + step, max(high, low) + step))
        yield tuple(first), tuple(second)


def touching_pairs(labels: np.ndarray, own: tuple[slice, ...],
                   offsets: list[tuple[int, int, int]]) -> np.ndarray:
    """(n, 2) pairs of different non-zero ids that touch (per `offsets`) at a pair owned by `own`, unique,
    smaller id first."""
    pairs = []
    for first, second in contacts(labels, own, offsets):
        a, b = labels[first], labels[second]
        touching = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([a[touching], b[touching]], axis=1))
    stacked = np.concatenate(pairs) if pairs else np.zeros((0, 2), labels.dtype)
    return np.unique(np.sort(stacked, axis=1), axis=0)
