"""Intensity normalisation with statistics of the whole volume.

The percentiles come from an exact intensity histogram (raw is uint8 or
uint16), summed over all chunks with Dask, so they do not depend on chunking
and need no more memory than one chunk plus the histogram.
"""

from __future__ import annotations

import os
from typing import Any

import dask.array as da
import numpy as np

from . import io, provenance


def histogram_percentiles(histogram: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """Intensity values at the given percentiles (0-100) of a histogram (lower-value rule)."""
    cumulative = np.cumsum(histogram)
    total = cumulative[-1]
    return tuple(float(np.searchsorted(cumulative, p / 100 * total, side="left")) for p in percentiles)


def normalise(block: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] to [0, 1], clipping outside; float32."""
    scale = 1.0 / max(high - low, 1e-6)
    return np.clip((block.astype(np.float32) - low) * scale, 0.0, 1.0)


def preprocess(raw_path: str | os.PathLike, output: str | os.PathLike, low_percentile: float,
               high_percentile: float, compression: dict[str, Any]) -> None:
    """Write the normalised float32 copy of the raw image at `output`."""
    started = provenance.now()
    raw_array = io.open_image(raw_path)
    raw = da.from_zarr(raw_array)
    histogram = _histogram(raw)
    low, high = histogram_percentiles(histogram, (low_percentile, high_percentile))
    voxel, unit = io.voxel_size(raw_path)
    with io.atomic_output(output) as partial:
        target = io.create_image(partial, raw.shape, np.float32, raw_array.chunks, compression, voxel, unit, "norm")
        da.store(raw.map_blocks(normalise, low, high, dtype=np.float32), target, lock=False)
        settings = {"low_percentile": low_percentile, "high_percentile": high_percentile}
        io.set_attrs(partial, provenance=provenance.record("preprocess", settings, {"raw": str(raw_path)}, started,
                                                           intensity_range=[low, high]))


def _histogram(raw: da.Array) -> np.ndarray:
    """Exact per-value histogram of an integer volume, summed over chunks."""
    bins = int(np.iinfo(raw.dtype).max) + 1
    counts, _ = da.histogram(raw, bins=bins, range=(-0.5, bins - 0.5))
    return counts.compute()
