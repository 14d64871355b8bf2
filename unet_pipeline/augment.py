"""Data augmentation applied identically to image, labels and weights (numpy in, numpy out)."""

from __future__ import annotations

import numpy as np


def random_dihedral(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """One of the 8 flips/rotations of the last two axes, the same for every array."""
    flip_y, flip_x, transpose = rng.integers(0, 2, size=3)
    out = []
    for array in arrays:
        if flip_y:
            array = array[..., ::-1, :]
        if flip_x:
            array = array[..., ::-1]
        if transpose:
            array = np.swapaxes(array, -1, -2)
        out.append(np.ascontiguousarray(array))
    return out
