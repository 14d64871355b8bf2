"""Intensity statistics of the whole volume, for normalising it on the fly.

The percentiles come from an intensity histogram summed over all chunks with
Dask, so they do not depend on chunking and need no more memory than one
chunk plus the histogram. For integer raw the histogram has one bin per value
(exact percentiles); for float raw it has 65,536 bins between the volume's
minimum and maximum (percentiles to within one bin width).
"""

from __future__ import annotations

import os

import dask.array as da
import numpy as np

from ..core.errors import InputError
from ..core.intensity import FLOAT_BINS, histogram_percentiles
from ..core.stage_settings import checked_stage
from ..distributed import records
from ..storage import intensity_stats, ome_zarr, provenance


@checked_stage
def preprocess(raw_path: str | os.PathLike, output: str | os.PathLike, *, low_percentile: float,
               high_percentile: float) -> dict[str, float]:
    """Write the raw image's intensity statistics (the values at the two percentiles) at `output` (JSON, see
    `storage.intensity_stats`); returns them. Predict and train normalise every tile they read with these:
    no normalised copy of the volume is written. A raw whose two percentiles coincide is refused.

    Args:
        low_percentile: the intensity percentile (0-100) mapped to 0.
        high_percentile: the intensity percentile (0-100) mapped to 1.
    """
    started = provenance.now()
    raw_array = ome_zarr.open_input(raw_path)
    raw = da.from_array(raw_array, chunks=raw_array.chunks, name=False)
    settings = {"low_percentile": low_percentile, "high_percentile": high_percentile}
    inputs = {"raw": str(raw_path)}
    fingerprints = provenance.fingerprint_inputs(inputs)
    print(f"preprocess: intensity histogram of {raw_path} ({raw.shape}, {raw.dtype})", flush=True)
    low, high = histogram_percentiles(*_histogram(raw), (low_percentile, high_percentile))
    if low >= high:
        raise InputError(f"{raw_path}: its {low_percentile} and {high_percentile} intensity percentiles are both "
                         f"{low}: the volume is constant there (a blank or saturated stack?), so nothing in it "
                         "could be segmented. Check the raw; for a stack of so little contrast on purpose, set "
                         "preprocess.low_percentile and high_percentile further apart")
    statistics = {"low": low, "high": high, **settings, "dtype": str(raw.dtype), "shape": list(raw.shape)}
    intensity_stats.write_statistics(output, {**statistics, "provenance": provenance.record(
        "preprocess", settings, inputs, started, fingerprints)})
    print(f"preprocess: [{low}, {high}] maps to [0, 1]", flush=True)
    return {"low": low, "high": high}


def _histogram(raw: da.Array) -> tuple[np.ndarray, np.ndarray]:
    """Counts over the whole volume and the value each bin stands for (its lower edge)."""
    if np.issubdtype(raw.dtype, np.integer):
        bins = int(np.iinfo(raw.dtype).max) + 1
        return _summed_counts(raw, bins, (-0.5, bins - 0.5)), np.arange(bins, dtype=np.float64)
    extremes = [da.compute(part.min(), part.max()) for part in _waves(raw)]
    low, high = min(float(e[0]) for e in extremes), max(float(e[1]) for e in extremes)
    span = (low, max(high, low + 1e-6))
    return _summed_counts(raw, FLOAT_BINS, span), np.linspace(*span, FLOAT_BINS + 1)[:-1]


def _summed_counts(raw: da.Array, bins: int, span: tuple[float, float]) -> np.ndarray:
    """The histogram of `raw`, one graph per wave of slabs summed as they finish."""
    counts = np.zeros(bins, dtype=np.int64)
    for part in _waves(raw):
        counts += da.histogram(part, bins=bins, range=span)[0].compute()
    return counts


def _waves(raw: da.Array) -> list[da.Array]:
    """`raw` in slabs of whole chunks, one graph each (see `records.wave_sections`): a whole-volume graph of a
    terabyte would have millions of tasks."""
    sections = records.wave_sections(raw, raw.chunks[0][0])
    return [raw[z : z + sections] for z in range(0, raw.shape[0], sections)]
