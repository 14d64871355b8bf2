"""Segmentation: threshold the cell probability, then connected components per section."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from scipy import ndimage

from . import io, progress, provenance

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


def segment(probabilities_path: str | os.PathLike, output: str | os.PathLike, threshold: float,
            compression: dict[str, Any]) -> None:
    """Write the cell segmentation (uint32, 0 = boundary) of a probability image at `output`."""
    started = provenance.now()
    probs = io.open_image(probabilities_path)
    voxel, unit = io.voxel_size(probabilities_path)
    shape, chunks = probs.shape[1:], probs.chunks[1:]
    with io.atomic_output(output) as partial:
        target = io.create_image(partial, shape, np.uint32, chunks, compression, voxel, unit, "segmentation")
        next_id = 1
        for z in progress.track(range(0, shape[0], chunks[0]), "segment sections"):
            block = label_sections(as_probability(probs[CELL_CHANNEL, z : z + chunks[0]]), threshold, next_id)
            target[z : z + chunks[0]] = block
            next_id = max(next_id, int(block.max()) + 1)
        io.set_attrs(partial, provenance=provenance.record(
            "segment", {"threshold": threshold}, {"probabilities": str(probabilities_path)}, started,
            segments=next_id - 1))
