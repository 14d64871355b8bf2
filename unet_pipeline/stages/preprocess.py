"""Intensity normalisation with statistics of the whole volume.

The percentiles come from an intensity histogram summed over all chunks with
Dask, so they do not depend on chunking and need no more memory than one
chunk plus the histogram. For integer raw the histogram has one bin per value
(exact percentiles); for float raw it has 65,536 bins between the volume's
minimum and maximum (percentiles to within one bin width).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import dask.array as da
import numpy as np

from ..core.intensity import FLOAT_BINS, histogram_percentiles, normalise
from ..core.stage_settings import checked_stage
from ..distributed import records
from ..storage import ome_zarr, provenance


@checked_stage
def preprocess(raw_path: str | os.PathLike, output: str | os.PathLike, *, low_percentile: float,
               high_percentile: float, compression: dict[str, Any]) -> dict[str, int]:
    """Write the normalised float32 copy of the raw image at `output`; returns slab counts.

    Args:
        low_percentile: the intensity percentile (0-100) mapped to 0.
        high_percentile: the intensity percentile (0-100) mapped to 1.
        compression: the config's `storage.compression` block.
    """
    started = provenance.now()
    raw_array = ome_zarr.open_input(raw_path)
    raw = da.from_array(raw_array, chunks=raw_array.chunks, name=False)
    settings = {"low_percentile": low_percentile, "high_percentile": high_percentile}
    inputs = {"raw": str(raw_path)}
    fingerprints = provenance.fingerprint_inputs(inputs)
    key = records.run_key(raw=fingerprints["raw"], compression=compression, **settings)

    create = functools.partial(ome_zarr.create_like, source=raw_path, dtype=np.float32, compression=compression,
                               name="norm")
    with records.resumable_image(output, key, create) as target:
        if target is None:
            return records.kept_complete(output, "preprocess")
        low, high = histogram_percentiles(*_histogram(raw), (low_percentile, high_percentile))
        stats = records.store_slabs(raw.map_blocks(normalise, low, high, dtype=np.float32), target, "preprocess")
        ome_zarr.set_attrs(target.partial, provenance=provenance.record(
            "preprocess", settings, inputs, started, fingerprints, intensity_range=[low, high], slabs=stats))
    return stats


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
