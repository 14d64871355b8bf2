"""Reading and writing regions of a local Zarr array through tensorstore, which decodes and encodes the
chunks of one call in parallel in C++: several times faster per call than zarr-python, whose every call pays
for its event loop (a tile's 3 x 3 chunks read in 0.3 ms against 2.5 ms; `benchmarks/predict.py`), and
a batch of tiles written in one call.

Arrays tensorstore cannot open (another store, a codec it lacks) are read and written by zarr-python as
before. Writes store every chunk, including those equal to the fill value (see `chunk_files`), so a missing chunk
file still means a lost one.

Used only in predict's Dask workers, which are spawned: tensorstore's threads do not survive a fork (a
forked child that used it aborts), and they take about 100 MB of address space, which a process under a
tight `ulimit -v` cannot spare (tensorstore then aborts instead of raising MemoryError).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import tensorstore
import zarr
from zarr.storage import LocalStore


def open_handle(array: zarr.Array, write: bool = False) -> Any | None:
    """A tensorstore handle on the same array on disk (read-only unless `write`), or None where there is
    none to be had."""
    if not isinstance(array, zarr.Array) or not isinstance(array.store, LocalStore):  # e.g. an `N5Array`
        return None
    spec = {"driver": "zarr3" if array.metadata.zarr_format == 3 else "zarr",
            "kvstore": {"driver": "file", "path": str(Path(array.store.root) / array.path)}}
    if write:
        spec["store_data_equal_to_fill_value"] = True
    try:
        handle = tensorstore.open(spec, read=True, write=write).result()
    except ValueError:  # what tensorstore raises for metadata or codecs it does not support
        return None
    return handle if tuple(handle.shape) == tuple(array.shape) else None


class LazyHandle:
    """A tensorstore handle on a Zarr array (see `open_handle`), opened on first use in each process: a handle
    does not travel, so a pickled one opens again where it is unpickled."""

    def __init__(self, array: zarr.Array, write: bool = False) -> None:
        self.array, self.write = array, write
        self._handle: Any = None
        self._opened = False

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None, "_opened": False}

    def get(self) -> Any | None:
        """The handle, or None where tensorstore cannot open the array."""
        if not self._opened:
            self._handle, self._opened = open_handle(self.array, self.write), True
        return self._handle


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


class RegionWriter:
    """Writes regions of a Zarr array, many per call, each of whole write units (chunks, or shards when
    sharded) so that concurrent writers never share a file: through tensorstore where it opens the array
    (opened on first use in each process), else through zarr-python one region at a time. Only for processes
    that do not fork once they have written (predict's Dask workers are spawned)."""

    def __init__(self, array: zarr.Array) -> None:
        self.array, self.shape = array, array.shape
        self._handle = LazyHandle(array, write=True)

    def write(self, writes: Iterable[tuple[Any, np.ndarray]]) -> None:
        """Store each (region, values) pair; tensorstore encodes and stores them all at once."""
        handle = self._handle.get()
        pending = []
        for key, values in writes:
            region = plain_region(key, self.shape)
            if handle is None or region is None:
                self.array[key] = values
            elif all(r.stop > r.start for r in region):
                pending.append(handle[region].write(np.asarray(values, dtype=self.array.dtype)))
        for future in pending:
            future.result()
