"""Reading regions of a local Zarr array through tensorstore, which decodes the chunks of one read in
parallel in C++: several times faster per call than zarr-python, whose every call pays for its event loop
(about 2.5 ms for a tile's 3 x 3 chunks against 0.3 ms here; `benchmarks/predict.py`'s overhead).

Only the read path: writes stay with zarr-python, which is as fast for one chunk. Arrays tensorstore cannot
open (another store, a codec it lacks) are read by zarr-python as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorstore
import zarr
from zarr.storage import LocalStore


def open_reader(array: zarr.Array) -> Any | None:
    """A read-only tensorstore handle on the same array on disk, or None where there is none to be had."""
    if not isinstance(array.store, LocalStore):
        return None
    spec = {"driver": "zarr3" if array.metadata.zarr_format == 3 else "zarr",
            "kvstore": {"driver": "file", "path": str(Path(array.store.root) / array.path)}}
    try:
        handle = tensorstore.open(spec, read=True).result()
    except ValueError:  # what tensorstore raises for metadata or codecs it does not support
        return None
    return handle if tuple(handle.shape) == tuple(array.shape) else None


def plain_region(key: Any, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """`key` as in-bounds unit-step slices on every axis, or None when it is anything else (integers, steps,
    fancy indexing: those go to zarr-python)."""
    key = key if isinstance(key, tuple) else (key,)
    if len(key) > len(shape) or not all(isinstance(k, slice) and k.step in (None, 1) for k in key):
        return None
    key = key + (slice(None),) * (len(shape) - len(key))
    return tuple(slice(*k.indices(n)[:2]) for k, n in zip(key, shape))


def read(handle: Any, region: tuple[slice, ...]) -> np.ndarray:
    """The values of `region` (see `plain_region`), decoded now."""
    if any(r.stop <= r.start for r in region):  # an empty selection: tensorstore refuses inverted bounds
        return np.zeros(tuple(max(0, r.stop - r.start) for r in region), dtype=handle.dtype.numpy_dtype)
    return handle[region].read().result()
