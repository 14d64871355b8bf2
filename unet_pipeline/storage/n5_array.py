"""An N5 dataset read in place through tensorstore, seen as the read-only part of a `zarr.Array` that the
stages use: shape, dtype, chunks, numpy slicing, and the chunk files' keys in a local store (so that
`chunk_files` refuses a missing chunk and names a corrupt one by its own file, as for a Zarr source).

N5 lists its dimensions fastest first, as its Java writers (Fiji, BigDataViewer, Paintera) do: a volume
`dimensions: [x, y, z]`, a chunk of grid index (z, y, x) in the file `x/y/z`. Read here in (z, y, x) order,
as z5py and zarr's N5 store read it (tensorstore alone keeps the listed order). Its border chunks are stored
truncated, and a chunk file that was never written reads as zeros (N5 has no fill value).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from zarr.storage import LocalStore

ATTRIBUTES = "attributes.json"


def is_n5_dataset(folder: str | Path) -> bool:
    """Whether `folder` is an N5 dataset (its attributes name dimensions, block size and data type)."""
    attributes = Path(folder) / ATTRIBUTES
    if not attributes.is_file():
        return False
    try:
        keys = json.loads(attributes.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(keys, dict) and {"dimensions", "blockSize", "dataType"} <= set(keys)


class N5ChunkKeys:
    """The part of Zarr array metadata that names chunk files: N5's reversed grid index."""

    @staticmethod
    def encode_chunk_key(index: tuple[int, ...]) -> str:
        return "/".join(str(i) for i in reversed(index))


class N5Array:
    """The N5 dataset at `folder`, read-only; its tensorstore handle opens on first read in each process (a
    handle does not travel to Dask's workers)."""

    shards = None
    fill_value = 0
    path = ""
    metadata = N5ChunkKeys()

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.store = LocalStore(str(self.folder), read_only=True)
        self._handle: Any = None
        handle = self._open()
        self.shape = tuple(int(n) for n in handle.shape)
        self.dtype = np.dtype(handle.dtype.numpy_dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(int(n) for n in handle.chunk_layout.read_chunk.shape)

    def _open(self) -> Any:
        if self._handle is None:
            import tensorstore

            listed = tensorstore.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(self.folder)}},
                                      read=True).result()
            self._handle = listed.T  # (z, y, x)
        return self._handle

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None}

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._open()[key].read().result())
