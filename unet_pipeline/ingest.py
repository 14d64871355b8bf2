"""Ingest: bring a raw or label stack (TIFF, Zarr, OME-Zarr) into our OME-Zarr layout.

Sources are read lazily and copied in slabs of whole output chunks along z,
so memory stays bounded by one slab whatever the volume size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tifffile
import zarr

from . import io, progress, provenance
from .geometry import Shape

RAW_DTYPES = (np.uint8, np.uint16)


def open_source(path: str | os.PathLike) -> Any:
    """A lazily sliceable (z, y, x) view of a TIFF stack, a Zarr array or an OME-Zarr image."""
    path = Path(path)
    if not path.exists():
        raise io.InputError(f"{path}: no such file or directory")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            array = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
        elif (path / io.LEVEL0).exists():
            array = io.open_image(path)
        else:
            array = zarr.open_array(str(path), mode="r")
    except (tifffile.TiffFileError, zarr.errors.ArrayNotFoundError, FileNotFoundError) as err:
        raise io.InputError(f"{path}: cannot read it as a TIFF stack or a Zarr array: {err}") from err
    if array.ndim == 2:
        array = _Sectioned(array)
    if array.ndim != 3:
        raise io.InputError(f"{path}: expected a (z, y, x) volume or one (y, x) section, got shape {array.shape}")
    return array


class _Sectioned:
    """A 2D array seen as a one-section (1, y, x) volume, still lazy."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = (1, *array.shape)
        self.dtype = array.dtype
        self.ndim = 3

    def __getitem__(self, key: slice) -> np.ndarray:
        """Sections along z (a slice of the single section 0)."""
        return np.asarray(self.array[...])[np.newaxis][key]


def check_source(path: str | os.PathLike, array: Any, kind: str) -> None:
    if kind == "raw" and np.dtype(array.dtype) not in RAW_DTYPES:
        raise io.InputError(f"{path}: raw must be uint8 or uint16, got {array.dtype}")
    if kind == "labels" and not np.issubdtype(array.dtype, np.integer):
        raise io.InputError(f"{path}: labels must be integers (0 = membrane, >0 = cell), got {array.dtype}")
    if 0 in array.shape:
        raise io.InputError(f"{path}: the volume is empty (shape {array.shape})")


def ingest(
    kind: str,
    source: str | os.PathLike,
    output: str | os.PathLike,
    chunks: Shape,
    compression: dict[str, Any],
    voxel_size: Sequence[float],
    unit: str,
) -> None:
    """Copy `source` into the OME-Zarr image `output` (`kind`: 'raw' or 'labels')."""
    started = provenance.now()
    array = open_source(source)
    check_source(source, array, kind)
    dtype = array.dtype if kind == "raw" else _label_dtype(array.dtype)
    with io.atomic_output(output) as partial:
        target = io.create_image(partial, array.shape, dtype, chunks, compression, voxel_size, unit, name=kind)
        slab = target.chunks[0]
        for z in progress.track(range(0, array.shape[0], slab), f"ingest {kind}"):
            target[z : z + slab] = np.asarray(array[z : z + slab]).astype(dtype, copy=False)
        record = provenance.record("ingest", {"kind": kind, "chunks": list(chunks), "compression": compression},
                                   {"source": str(source)}, started)
        io.set_attrs(partial, provenance=record)


def _label_dtype(dtype: np.dtype) -> np.dtype:
    """Labels keep their integer type when unsigned, else widen to uint32."""
    dtype = np.dtype(dtype)
    return dtype if np.issubdtype(dtype, np.unsignedinteger) else np.dtype(np.uint32)
