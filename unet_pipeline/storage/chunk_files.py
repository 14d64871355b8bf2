"""Which chunk files of a Zarr array are on disk, and refusing arrays that lack some.

Zarr reads a chunk that was never written as the array's fill value: right
for sparse data, wrong for this pipeline, whose every stage writes every
chunk of its output (see `ome_zarr`). A chunk missing from an
array a stage reads is a truncated copy, a failed sync or a lost file, and
reading it as zeros would corrupt everything downstream without a word.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import zarr
from zarr.core.sync import sync
from zarr.storage import LocalStore

from ..core.errors import InputError
from ..core.geometry import Box, grid_indices
from . import tensorstore_io

SHOWN = 3  # missing chunk keys named in a message


def stored_unit(array: zarr.Array) -> tuple[int, ...]:
    """The shape of one stored file of `array`: a shard when sharded, else a chunk."""
    return array.shards or array.chunks


def expected_keys(array: zarr.Array) -> list[str]:
    """The store key of every chunk (or shard) file of `array`, relative to the array."""
    return list(map(array.metadata.encode_chunk_key, grid_indices(array.shape, stored_unit(array))))


def stored_keys(array: zarr.Array) -> set[str]:
    """The keys under `array` in its store (chunk files and metadata), relative to the array; those of its
    stored chunks for an array that keeps them inside one file (see `hdf5_array`)."""
    if hasattr(array, "stored_chunk_keys"):
        return array.stored_chunk_keys()
    store, prefix = array.store, array.path
    if isinstance(store, LocalStore):
        root = Path(store.root) / prefix
        return {str(Path(folder, name).relative_to(root)).replace(os.sep, "/")
                for folder, _, names in os.walk(root) for name in names}

    async def listing() -> list[str]:
        return [key async for key in store.list_prefix(prefix)]

    start = len(prefix) + 1 if prefix else 0
    return {key[start:] for key in sync(listing())}


def missing_keys(array: zarr.Array, expected: list[str] | None = None) -> list[str]:
    """The chunk (or shard) files of `array` (of `expected`, its keys, when given) that are not in its store,
    in grid order."""
    stored = stored_keys(array)
    return [key for key in expected or expected_keys(array) if key not in stored]


def region_keys(array: zarr.Array, region: Box) -> list[str]:
    """The store key of every chunk (or shard) file of `array` that holds part of `region`, in grid order."""
    return list(map(array.metadata.encode_chunk_key, region.units(stored_unit(array))))


def missing_in_region(array: zarr.Array, region: Box) -> tuple[list[str], int]:
    """The chunk files holding `region` that are not in the store, and how many hold it; in a local store each
    is looked up on its own, so the files of the rest of the array are never listed."""
    expected = region_keys(array, region)
    if isinstance(array.store, LocalStore):
        root = Path(array.store.root) / array.path
        return [key for key in expected if not (root / key).exists()], len(expected)
    stored = stored_keys(array)
    return [key for key in expected if key not in stored], len(expected)


def unit_noun(array: zarr.Array) -> str:
    """How messages name one stored unit of `array`: 'chunk file', or 'chunk' for chunks inside one file."""
    return getattr(array, "unit_noun", "chunk file")


def describe_missing(name: str | os.PathLike, missing: list[str], total: int, noun: str) -> str:
    """'<name>: 2 of 16 chunk files are missing (0/1/0, 0/1/1)'."""
    shown = ", ".join(missing[:SHOWN]) + (", ..." if len(missing) > SHOWN else "")
    return f"{name}: {len(missing)} of {total} {noun}s are missing ({shown})"


def require_all_chunks(array: zarr.Array, name: str | os.PathLike, region: Box | None = None) -> None:
    """Refuse `array` (named `name` in the message) unless every chunk file (of those holding `region`, when
    given) is stored."""
    if region is None:
        expected = expected_keys(array)
        missing, total = missing_keys(array, expected), len(expected)
    else:
        missing, total = missing_in_region(array, region)
    if missing:
        raise InputError(f"{describe_missing(name, missing, total, unit_noun(array))}; a stage of this pipeline "
                         "writes every chunk, so the array is incomplete (a truncated copy, a failed sync or a "
                         "lost file): rerun the stage that wrote it")


def refuse_sparse_source(array: zarr.Array, name: str | os.PathLike) -> None:
    """Refuse a foreign Zarr (or N5 or HDF5, see `n5_array` and `hdf5_array`) source with unwritten chunks;
    reading them as its fill value must be asked for."""
    expected = expected_keys(array)
    missing = missing_keys(array, expected)
    if missing:
        raise InputError(f"{describe_missing(name, missing, len(expected), unit_noun(array))}; they would be "
                         f"read as the fill value {array.fill_value!r}. Set volumes.<volume>.missing_chunks: fill "
                         "to accept that (a sparse source), or complete the source")


class CheckedReads:
    """A Zarr array read through numpy slicing whose failed reads name the chunk file that cannot be decoded
    (a corrupt, truncated or unreadable file) instead of passing on the decoder's bare error.

    With `fast`, plain regions of a local array are read through tensorstore (see `tensorstore_io`), opened on
    first use in each process; everything else, and the search for a culprit, through zarr-python. Only for
    processes that do not fork once they have read (Dask's workers are spawned): tensorstore's threads do not
    survive a fork, and a forked child that reads through it aborts.
    """

    def __init__(self, array: zarr.Array, name: str | os.PathLike, fast: bool = False) -> None:
        self.array, self.name = array, str(name)
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.chunks, self.shards = array.chunks, array.shards
        self._reader = tensorstore_io.LazyHandle(array) if fast else None  # None: zarr-python reads it all

    def _read(self, key: Any) -> Any:
        region = tensorstore_io.plain_region(key, self.shape)
        reader = self._reader.get() if region is not None and self._reader is not None else None
        if reader is None:
            return self.array[key]
        return tensorstore_io.read(reader, region)

    def __getitem__(self, key: Any) -> Any:
        try:
            return self._read(key)
        except Exception as err:
            culprit = self._unreadable_chunk(key)
            if culprit is None:
                raise
            raise InputError(f"{self.name}: {unit_noun(self.array)} {culprit[0]} cannot be read ({culprit[1]!r}); "
                             "the array is damaged: rerun the stage that wrote it, or restore the file") from err

    def _unreadable_chunk(self, key: Any) -> tuple[str, Exception] | None:
        """The first stored unit (chunk or shard) inside the region `key` reads that fails, and its error."""
        key = key if isinstance(key, tuple) else (key,)
        start, stop = [], []
        for axis, size in enumerate(self.shape):
            part = key[axis] if axis < len(key) else slice(None)
            if isinstance(part, slice):
                first, last, _ = part.indices(size)
            else:
                first = int(part) % size
                last = first + 1
            start.append(first)
            stop.append(max(first, last))
        unit = stored_unit(self.array)
        for index in Box(start, stop).units(unit):
            try:
                self.array[Box.unit(index, unit, self.shape).slices()]
            except Exception as err:  # whatever the codec raises: that unit is the culprit
                return self.array.metadata.encode_chunk_key(index), err
        return None
