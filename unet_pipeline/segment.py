"""Segmentation of the cell probability: threshold + connected components, or a seeded watershed.

`mode` '2d': each section on its own (ids unique across sections); '3d':
segments connected through sections. The volume is streamed in slabs of
sections; in 3D, components that meet across a slab face are joined
(union-find), so a segment crossing a slab border gets one id, exactly as in
a whole-volume labelling. The watershed floods 1 - p from seeds (components
of p > seed_threshold, joined the same way) inside the mask p > threshold;
segments smaller than `min_size` pixels become boundary.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from . import io, progress, provenance
from .cells import SlabComponents

CELL_CHANNEL = 1


def as_probability(values: np.ndarray) -> np.ndarray:
    """Stored probabilities as float32 in [0, 1] (uint8 storage is scaled by 255)."""
    values = np.asarray(values)
    return values.astype(np.float32) / 255 if values.dtype == np.uint8 else values.astype(np.float32)


def label_sections(cell_probability: np.ndarray, threshold: float, first_id: int = 1) -> np.ndarray:
    """Connected components (4-connected) of p > threshold in each (y, x) section of a (z, y, x) block.

    Ids are unique across the block and start at `first_id`; 0 is boundary.
    """
    out = np.zeros(cell_probability.shape, dtype=np.uint32)
    next_id = first_id
    for z, section in enumerate(cell_probability):
        labels, count = ndimage.label(section > threshold)
        out[z] = np.where(labels > 0, labels + (next_id - 1), 0)
        next_id += count
    return out


def flood(cell_probability: np.ndarray, seeds: np.ndarray, threshold: float, min_size: int) -> np.ndarray:
    """Seeded watershed of 1 - p inside p > threshold (any rank), then small segments removed."""
    segments = watershed(1.0 - cell_probability, markers=seeds, mask=cell_probability > threshold)
    return remove_small(segments, min_size)


def remove_small(segments: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 1:
        return segments
    ids, sizes = np.unique(segments, return_counts=True)
    small = ids[(sizes < min_size) & (ids > 0)]
    return np.where(np.isin(segments, small), 0, segments)


def segment_block(probability: np.ndarray, method: str, threshold: float, seed_threshold: float,
                  min_size: int, seeds: np.ndarray | None = None) -> np.ndarray:
    """Segments of a (z, y, x) block of cell probabilities, section by section (2D)."""
    if method == "components":
        return remove_small(label_sections(probability, threshold), min_size)
    if method != "watershed":
        raise ValueError(f"segment.method must be 'components' or 'watershed', got {method!r}")
    if seeds is None:
        seeds = label_sections(probability, seed_threshold)
    return np.stack([flood(p, s, threshold, min_size) for p, s in zip(probability, seeds)])


def segment(probabilities_path: str | os.PathLike, output: str | os.PathLike, method: str, mode: str,
            threshold: float, seed_threshold: float, min_size: int, compression: dict[str, Any]) -> None:
    """Write the cell segmentation (uint32 ids, 0 = boundary) of a probability image at `output`."""
    started = provenance.now()
    probs = io.open_image(probabilities_path)
    if probs.ndim != 4:
        raise io.InputError(f"{probabilities_path}: expected class probabilities (c, z, y, x), got {probs.shape}")
    voxel, unit = io.voxel_size(probabilities_path)
    shape, slab = probs.shape[1:], io.write_unit(probs)[1]

    def cell(first: int, last: int) -> np.ndarray:
        return as_probability(probs[CELL_CHANNEL, first:last])

    with io.atomic_output(output) as partial:
        target = io.create_image(partial, shape, np.uint32, compression=compression, voxel_size=voxel, unit=unit,
                                 name="segmentation", labels=True, **io.layout(probabilities_path))
        if mode == "2d":
            next_id = 1
            for z in progress.track(range(0, shape[0], slab), "segment slabs"):
                block = segment_block(cell(z, z + slab), method, threshold, seed_threshold, min_size)
                block = np.where(block > 0, block + (next_id - 1), 0).astype(np.uint32)
                target[z : z + slab] = block
                next_id = max(next_id, int(block.max()) + 1)
        elif mode == "3d":
            grow = seed_threshold if method == "watershed" else threshold
            components = SlabComponents(lambda first, last: cell(first, last) > grow, shape[0], slab)
            for z in progress.track(range(0, shape[0], slab), "segment slabs"):
                last = min(z + slab, shape[0])
                seeds = components.region(z, last)
                block = (seeds if method == "components" else
                         flood(cell(z, last), seeds, threshold, 1))
                target[z:last] = remove_small(block, min_size).astype(np.uint32)
        else:
            raise ValueError(f"segment.mode must be '2d' or '3d', got {mode!r}")
        settings = {"method": method, "mode": mode, "threshold": threshold, "seed_threshold": seed_threshold,
                    "min_size": min_size}
        io.write_pyramid(partial)
        io.set_attrs(partial, provenance=provenance.record(
            "segment", settings, {"probabilities": str(probabilities_path)}, started))
