"""Intensity statistics and normalisation (numpy in, numpy out): percentiles of a histogram, and the map of
[low, high] to [0, 1]. Integer images get one histogram bin per value (exact percentiles); float images
`FLOAT_BINS` bins between their minimum and maximum.
"""

from __future__ import annotations

from typing import Any

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


class Normalised:
    """An image read through `normalise`: what a stage that needs the normalised image reads, computed per read
    from the raw (bit-identical to reading a normalised float32 copy, which is never written)."""

    def __init__(self, raw: Any, low: float, high: float) -> None:
        self.raw, self.low, self.high = raw, low, high
        self.shape, self.ndim, self.dtype = raw.shape, raw.ndim, np.dtype(np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        return normalise(np.asarray(self.raw[key]), self.low, self.high)


def normalised(raw: Any, intensity_range: tuple[float, float] | None) -> Any:
    """`raw` read normalised to `intensity_range` (low, high); None: `raw` as it is (already normalised)."""
    return raw if intensity_range is None else Normalised(raw, *intensity_range)
