"""How class probabilities are stored: channel `CELL_CHANNEL` holds the cell class, values float16/float32 or
uint8 scaled so that 255 = 1 (numpy in, numpy out).
"""

from __future__ import annotations

import numpy as np

CELL_CHANNEL = 1


def as_probability(values: np.ndarray) -> np.ndarray:
    """Stored probabilities as float32 in [0, 1] (uint8 storage is scaled by 255)."""
    values = np.asarray(values)
    return values.astype(np.float32) / 255 if values.dtype == np.uint8 else values.astype(np.float32)


def to_storage(probabilities: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities as stored: float16/float32, or uint8 scaled so 255 = 1."""
    if dtype == "uint8":
        return np.round(probabilities * 255).astype(np.uint8)
    return probabilities.astype(dtype)
