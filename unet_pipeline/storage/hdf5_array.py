"""An HDF5 dataset read through h5py, seen as the read-only part of a `zarr.Array` that the stages use: shape,
dtype, chunks, fill value, numpy slicing, and its chunks' keys (so that `chunk_files` refuses a chunk that was
never written and names one that cannot be decoded, as for a Zarr source).

The chunks of an HDF5 dataset live inside its one file: a chunk's key is its grid index (z/y/x), and the
stored ones are those HDF5 has allocated. The file is opened for each read and closed after it, so a handle
never travels to Dask's workers nor survives a fork, and no lock is held on a user's file between reads.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..core.errors import InputError

SUFFIXES = (".h5", ".hdf5", ".hdf")


def hdf5_location(path: str | Path) -> tuple[Path, str] | None:
    """The HDF5 file and the path inside it ('' for none) that `path` (`file.h5/path/to/dataset`) names, or None
    when no HDF5 file is on it."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.suffix.lower() in SUFFIXES and candidate.is_file():
            return candidate, str(path.relative_to(candidate)) if path != candidate else ""
    return None


def dataset_name(handle: Any, file: Path, inner: str) -> str:
    """The dataset `inner` of the open HDF5 file `handle`, or its only dataset when `inner` is ''."""
    import h5py

    if not inner:
        datasets: list[str] = []
        handle.visititems(lambda name, node: datasets.append(name) if isinstance(node, h5py.Dataset) else None)
        if len(datasets) != 1:
            raise InputError(f"{file}: name the dataset as {file}/<dataset>; it holds {datasets or 'none'}")
        inner = datasets[0]
    if inner not in handle or not isinstance(handle[inner], h5py.Dataset):
        raise InputError(f"{file}: no dataset {inner!r} in it")
    return inner


class GridKeys:
    """The part of Zarr array metadata that names chunks: here their grid index, z/y/x."""

    @staticmethod
    def encode_chunk_key(index: tuple[int, ...]) -> str:
        return "/".join(map(str, index))


class HDF5Array:
    """The dataset `inner` of the HDF5 file `file` (its only dataset when `inner` is ''), read-only."""

    shards = None
    store = None  # its chunks are not files of a store: see `stored_chunk_keys`
    path = ""
    metadata = GridKeys()
    unit_noun = "chunk"  # how messages name a stored unit (a Zarr array's are chunk files)

    def __init__(self, file: str | Path, inner: str = "") -> None:
        import h5py

        self.file = Path(file)
        with h5py.File(self.file, "r") as handle:
            self.dataset = dataset_name(handle, self.file, inner)
            dataset = handle[self.dataset]
            self.shape, self.dtype, self.ndim = tuple(dataset.shape), np.dtype(dataset.dtype), dataset.ndim
            self.chunked = dataset.chunks is not None  # a contiguous dataset is one unit, its whole shape
            self.chunks = tuple(dataset.chunks or dataset.shape)
            self.fill_value = np.asarray(dataset.fillvalue).item()

    def __str__(self) -> str:
        return f"{self.file}/{self.dataset}"

    @contextmanager
    def _opened(self) -> Iterator[Any]:
        import h5py

        with h5py.File(self.file, "r") as handle:
            yield handle[self.dataset]

    def __getitem__(self, key: Any) -> np.ndarray:
        with self._opened() as dataset:
            return np.asarray(dataset[key])

    def stored_chunk_keys(self) -> set[str]:
        """The keys of the chunks HDF5 has allocated (a contiguous dataset's one unit once it was written)."""
        stored: set[str] = set()
        with self._opened() as dataset:
            if not self.chunked:
                return {self.metadata.encode_chunk_key((0,) * self.ndim)} if dataset.id.get_storage_size() else stored
            dataset.id.chunk_iter(lambda info: stored.add(self.metadata.encode_chunk_key(
                tuple(offset // size for offset, size in zip(info.chunk_offset, self.chunks)))))
        return stored
