"""The warping error as first written here, vectorised numpy: the reference the compiled kernel must equal."""

from __future__ import annotations

import numpy as np

from unet_pipeline.segmentation.metrics import _SIMPLE


def _simple_points(image: np.ndarray) -> np.ndarray:
    """Boolean map of the simple pixels of a binary image (border pixels padded with background)."""
    padded = np.pad(image, 1)
    code = np.zeros(image.shape, dtype=np.int64)
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    height, width = image.shape
    for bit, (dy, dx) in enumerate(offsets):
        code |= padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width].astype(np.int64) << bit
    return _SIMPLE[code]  # the test reads the neighbours only: it holds for adding and for removing a pixel


def reference_warping_error(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray]:
    """Warping error of a binary 2D prediction against binary truth, and the map of topological errors."""
    warped = predicted.astype(bool).copy()
    truth = truth.astype(bool)
    changed = True
    while changed:
        changed = False
        for phase_y in range(3):  # pixels 3 apart never share a neighbourhood: flip them together
            for phase_x in range(3):
                flip = (warped != truth) & _simple_points(warped)
                phase = np.zeros_like(flip)
                phase[phase_y::3, phase_x::3] = True
                flip &= phase
                if flip.any():
                    warped ^= flip
                    changed = True
    errors = warped != truth
    return float(np.count_nonzero(errors)) / errors.size, errors
