"""Intensity statistics and normalisation (numpy in, numpy out): percentiles of a histogram, and the map of
[low, high] to [0, 1]. Integer images get one histogram bin per value (exact percentiles); float images
`FLOAT_BINS` bins between their minimum and maximum.
"""

from __future__ import annotations

import numpy as np

FLOAT_BINS = 1 << 16


def histogram_percentiles(histogram: np.ndarray, values: np.ndarray,
                          percentiles: tuple[float, float]) -> tuple[float, float]:
    """The bin values at the given percentiles (0-100) of a histogram (lower-value rule)."""
    cumulative = np.cumsum(histogram)
    total = cumulative[-1]
    return tuple(float(values[np.searchsorted(cumulative, p / 100 * total, side="left")]) for p in percentiles)


def normalise(block: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] to [0, 1], clipping outside; float32."""
    scale = 1.0 / max(high - low, 1e-6)
    return np.clip((block.astype(np.float32) - low) * scale, 0.0, 1.0)
