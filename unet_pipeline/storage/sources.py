"""Open any stack a user brings as a lazy (z, y, x) array, read section by section or chunk by chunk.

A source is named by one string: a multi-page TIFF; a folder of per-section
TIFF or PNG files (natural sort order); `file.h5/path/to/dataset` (HDF5);
a Zarr (v2 or v3) array, an OME-Zarr image (level 0), or
`container.n5/path/to/dataset` (N5, through tensorstore). Nothing is read
until a region is sliced.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tifffile
import zarr
from zarr.storage import LocalStore

from ..core.errors import InputError
from . import chunk_files, hdf5_array, ome_zarr
from .hdf5_array import HDF5Array
from .n5_array import N5Array, is_n5_dataset

SECTION_SUFFIXES = (".tif", ".tiff", ".png")


@dataclass(frozen=True)
class SourceFormat:
    """One kind of source: how to recognise its file, open it as a (z, y, x) array and read its voxel size.

    `open` and `voxel_size` take the file and the path inside it ('' for
    none); a `container` holds datasets named by such a path (`file.h5/em`).
    """

    description: str  # for messages: "cannot read it as <description>"
    matches: Callable[[Path], bool]
    open: Callable[[Path, str], Any]
    voxel_size: Callable[[Path, str], tuple[list[float], str] | None]
    container: bool = False


FORMATS: dict[str, SourceFormat] = {}  # tried in order; the first whose `matches` accepts a file reads it


def register_format(name: str, source_format: SourceFormat) -> None:
    """Add a source format (placed before the catch-all Zarr format)."""
    fallback = FORMATS.pop("zarr", None)
    FORMATS[name] = source_format
    if fallback is not None and name != "zarr":
        FORMATS["zarr"] = fallback


def source_format(file: Path) -> SourceFormat:
    return next(candidate for candidate in FORMATS.values() if candidate.matches(file))


def source_file(spec: str | os.PathLike) -> Path:
    """The file or folder on disk that a source spec names (the HDF5 file or N5 container for an inner path)."""
    path = Path(spec)
    for candidate in (path, *path.parents):
        if any(f.container and f.matches(candidate) for f in FORMATS.values()):
            return candidate
    return path


def _split(spec: str | os.PathLike) -> tuple[Path, str]:
    """The file or folder on disk and the path inside it ('' for none) that a source spec names."""
    path, file = Path(spec), source_file(spec)
    return file, str(path.relative_to(file)) if path != file else ""


def open_source(spec: str | os.PathLike, refuse_missing_chunks: bool = False) -> Any:
    """A lazily sliceable (z, y, x) view of the source `spec`; a single (y, x) image is one section. Its reads
    name the file (and the chunk file of a Zarr source) when they fail. With `refuse_missing_chunks` a Zarr,
    N5 or HDF5 source with unwritten chunks is refused."""
    file, inner = _split(spec)
    if not file.exists():
        raise InputError(f"{file}: no such file or directory")
    found = source_format(file)
    try:
        array = found.open(file, inner)
    except InputError:
        raise
    except Exception as err:  # each reader raises its own types: name the file and pass on what it said
        raise InputError(f"{spec}: cannot read it as {found.description}: {err}") from err
    if refuse_missing_chunks:
        _refuse_missing_chunks(spec, array)
    if array.ndim == 2:
        section = array
        array = LazyStack([lambda: np.asarray(section[...])], section.shape, section.dtype, str(spec))
    if array.ndim != 3:
        raise InputError(f"{spec}: expected a (z, y, x) volume or one (y, x) section, got shape {array.shape}")
    if isinstance(array, zarr.Array) and isinstance(array.store, LocalStore):
        array = chunk_files.CheckedReads(array, spec)
    return NamedReads(array, str(spec))


class NamedReads:
    """A source whose failed reads name it and the sections read (a corrupt or truncated file)."""

    def __init__(self, array: Any, spec: str) -> None:
        self.array, self.spec = array, spec
        self.shape, self.dtype, self.ndim = tuple(array.shape), np.dtype(array.dtype), array.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return self.array[key]
        except InputError:
            raise
        except Exception as err:  # whatever the format's reader raises
            z = key[0] if isinstance(key, tuple) else key
            first, last, _ = z.indices(self.shape[0]) if isinstance(z, slice) else (z, z + 1, 1)
            raise InputError(f"{self.spec}: cannot read sections {first}-{last - 1} ({err!r}); the file is "
                             "damaged or truncated") from err


def _refuse_missing_chunks(spec: str | os.PathLike, array: Any) -> None:
    """Refuse a Zarr, N5 or HDF5 source some of whose chunks were never written (see `chunk_files`); the other
    formats store every byte."""
    if isinstance(array, (N5Array, HDF5Array)) or isinstance(array, zarr.Array) and isinstance(array.store, LocalStore):
        chunk_files.refuse_sparse_source(array, spec)


def _is_zarr(folder: Path) -> bool:
    return any((folder / name).exists() for name in (".zarray", ".zgroup", "zarr.json", ome_zarr.LEVEL0))


def _ome_level0(folder: Path) -> str | None:
    """The path of level 0 inside an OME-Zarr image (its first multiscale dataset), or None for a folder that
    is no OME-Zarr image."""
    try:
        attrs = dict(zarr.open_group(str(folder), mode="r").attrs)
    except Exception:  # a plain array, or no Zarr node at all
        return None
    multiscales = attrs.get("ome", attrs).get("multiscales") or [{}]
    datasets = multiscales[0].get("datasets") or [{}]
    return datasets[0].get("path")


def in_place_array(spec: str | os.PathLike) -> Path | None:
    """Where the chunked (z, y, x) array a source spec names lies, which a stage can read in place: the folder
    of a Zarr array (level 0 of an OME-Zarr image, or a plain one) or of an N5 dataset, or `file.h5/dataset`
    for a chunked HDF5 dataset; None for every other format, layout or number of axes."""
    file, inner = _split(spec)
    found = source_format(file)
    if found is FORMATS["hdf5"]:
        array: Any = HDF5Array(file, inner)
        where, chunked = file / array.dataset, array.chunked
    elif found is FORMATS["zarr"] and file.is_dir():
        where, chunked = _zarr_array_folder(file, inner), True
        array = zarr.open_array(str(where), mode="r")
    elif found is FORMATS["n5"] and is_n5_dataset(file / inner):
        where, chunked = file / inner, True
        array = N5Array(where)
    else:
        return None
    return where if chunked and array.ndim == 3 else None


def _zarr_array_folder(file: Path, inner: str) -> Path:
    """The folder of the array a Zarr source names: level 0 of an OME-Zarr image, else the array itself."""
    level0 = _ome_level0(file) if not inner else None
    return file / (level0 if level0 is not None else inner)


def _open_zarr(file: Path, inner: str) -> zarr.Array:
    return zarr.open_array(str(_zarr_array_folder(file, inner)), mode="r")


def _open_n5(file: Path, inner: str) -> N5Array:
    return N5Array(file / inner)


class LazyStack:
    """Sections read on demand, one callable per section; slicing reads only the sections it needs."""

    def __init__(self, readers: list[Callable[[], np.ndarray]], section_shape: tuple[int, ...], dtype: Any,
                 names: list[str] | str) -> None:
        self.readers, self.names = readers, names
        self.shape = (len(readers), *section_shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        z, rest = key[0], key[1:]
        indices = range(*z.indices(self.shape[0])) if isinstance(z, slice) else [z]
        sections = [self._section(i)[rest] for i in indices]
        block = np.stack(sections) if sections else np.empty((0, *self.shape[1:]), self.dtype)
        return block if isinstance(z, slice) else block[0]

    def _section(self, index: int) -> np.ndarray:
        section = np.asarray(self.readers[index]())
        if section.shape != self.shape[1:] or section.dtype != self.dtype:
            name = self.names[index] if isinstance(self.names, list) else self.names
            raise InputError(f"{name}: section {index} is {section.shape} {section.dtype}; the stack's first "
                                f"section is {self.shape[1:]} {self.dtype}")
        return section


def natural_key(name: str) -> list[Any]:
    """Sort key that orders 'z2' before 'z10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def section_files(folder: Path) -> LazyStack:
    """A folder of single-section TIFF or PNG files, in natural order, as a lazy stack."""
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in SECTION_SUFFIXES),
                   key=lambda p: natural_key(p.name))
    if not files:
        raise InputError(f"{folder}: no .tif, .tiff or .png sections in this folder")
    suffixes = {p.suffix.lower().replace(".tiff", ".tif") for p in files}
    if len(suffixes) > 1:
        raise InputError(f"{folder}: mixes {' and '.join(sorted(suffixes))} sections; keep one kind per folder")
    first = _read_section(files[0])
    if first.ndim != 2:
        raise InputError(f"{files[0]}: expected a single-channel (y, x) section, got shape {first.shape}")
    return LazyStack([lambda p=p: _read_section(p) for p in files], first.shape, first.dtype,
                     [str(p) for p in files])


def _read_section(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as image:
            return np.asarray(image)
    return tifffile.imread(path)


UNITS = {"nm": "nanometer", "nanometer": "nanometer", "um": "micrometer", "micron": "micrometer",
         "\u00b5m": "micrometer", "\\u00B5m": "micrometer", "micrometer": "micrometer", "angstrom": "angstrom",
         "\u00c5": "angstrom"}


def source_voxel_size(spec: str | os.PathLike) -> tuple[list[float], str] | None:
    """The (z, y, x) voxel size and NGFF unit recorded in a source's own metadata, or None when it has none.

    Read from: OME-Zarr scales; ImageJ TIFF (spacing, resolution, unit);
    HDF5 `element_size_um` (Fiji, ilastik); N5 `pixelResolution` or
    `resolution` (x, y, z order, reversed here).
    """
    file, inner = _split(spec)
    return source_format(file).voxel_size(file, inner)


def _zarr_voxel_size(file: Path, inner: str) -> tuple[list[float], str] | None:
    return ome_zarr.voxel_size(file) if not inner and _ome_level0(file) is not None else None


def _hdf5_voxel_size(file: Path, inner: str) -> tuple[list[float], str] | None:
    import h5py

    with h5py.File(file, "r") as handle:
        size = handle[hdf5_array.dataset_name(handle, file, inner)].attrs.get("element_size_um")
        return ([float(v) for v in size], "micrometer") if size is not None and len(size) == 3 else None


def _n5_voxel_size(file: Path, inner: str) -> tuple[list[float], str] | None:
    attributes = file / inner / "attributes.json"
    attrs = json.loads(attributes.read_text()) if attributes.exists() else {}
    pixel = attrs.get("pixelResolution") or {}
    size, unit = pixel.get("dimensions") or attrs.get("resolution"), pixel.get("unit") or attrs.get("unit", "nm")
    return ([float(v) for v in reversed(size)], UNITS[unit]) if size and unit in UNITS else None


def _tiff_voxel_size(file: Path, inner: str) -> tuple[list[float], str] | None:
    """ImageJ's calibration: z spacing in its metadata, y and x from the resolution tags, in its unit."""
    with tifffile.TiffFile(file) as tif:
        metadata = tif.imagej_metadata or {}
        unit = UNITS.get(str(metadata.get("unit", "")))
        tags = tif.pages[0].tags
        if unit is None or "XResolution" not in tags or "YResolution" not in tags:
            return None
        (xn, xd), (yn, yd) = tags["XResolution"].value, tags["YResolution"].value
        return [float(metadata.get("spacing", 1.0)), yd / yn, xd / xn], unit


def _has_suffix(*suffixes: str) -> Callable[[Path], bool]:
    return lambda file: file.suffix.lower() in suffixes


def _no_voxel_size(file: Path, inner: str) -> None:
    return None


register_format("tiff", SourceFormat("a TIFF stack", _has_suffix(".tif", ".tiff"),
                                     lambda file, _: zarr.open(tifffile.imread(file, aszarr=True), mode="r"),
                                     _tiff_voxel_size))
register_format("hdf5", SourceFormat("an HDF5 dataset", _has_suffix(*hdf5_array.SUFFIXES), HDF5Array,
                                     _hdf5_voxel_size, container=True))
register_format("n5", SourceFormat("an N5 dataset", _has_suffix(".n5"), _open_n5, _n5_voxel_size, container=True))
register_format("sections", SourceFormat("a folder of TIFF or PNG sections",
                                         lambda file: file.is_dir() and not _is_zarr(file),
                                         lambda file, _: section_files(file), _no_voxel_size))
register_format("zarr", SourceFormat("a Zarr array", lambda file: True, _open_zarr, _zarr_voxel_size))
