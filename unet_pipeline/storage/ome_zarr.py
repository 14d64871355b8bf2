"""OME-Zarr images on disk: create, open, read their metadata and attributes (provenance among them).

Every array we write is an OME-NGFF image with a multiscale pyramid; level 0
lives at `<image>/0`. A raw image may instead be linked: its level 0 is the
user's own Zarr array (or N5 or HDF5 dataset), read in place through a symbolic link (`link_image`),
and it names the layout the images derived from it take.

The default is NGFF 0.4 (Zarr format 2, '/' chunk keys), which
napari-ome-zarr, neuroglancer, tensorstore, ome-zarr-py and the older
readers still in use all open; NGFF 0.5 (Zarr format 3) is available
for sharded volumes with very many chunks. Later stages inherit the layout
(chunks, shards, version) of their input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numcodecs
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_multiscales_metadata

from ..core.errors import ConfigError, InputError
from ..core.geometry import Box, Coordinate, Shape, round_up
from . import crash_points
from .chunk_files import CheckedReads, require_all_chunks
from .hdf5_array import HDF5Array, hdf5_location
from .n5_array import N5Array, is_n5_dataset

LEVEL0 = "0"
PYRAMID = "pyramid"  # group attribute: whether the image gets downsampled levels
DERIVED_LAYOUT = "derived_layout"  # group attribute of a linked image: the layout of the images derived from it
LINKED_DATASET = "linked_dataset"  # group attribute of an image linked to an HDF5 file: the dataset in it
# Every stage writes every chunk of its outputs, even one that is all fill value, so that a missing chunk
# file always means a lost one (see `chunk_files`); Zarr skips such chunks by default.
zarr.config.set({"array.write_empty_chunks": True})
_SHUFFLE = {"none": numcodecs.Blosc.NOSHUFFLE, "byte": numcodecs.Blosc.SHUFFLE, "bit": numcodecs.Blosc.BITSHUFFLE}


# the schema's defaults of storage.compression (tests/test_storage_modules.py keeps the two equal)
DEFAULT_COMPRESSION = {"codec": "blosc", "cname": "zstd", "level": 5, "shuffle": "bit"}
NGFF_VERSIONS = {"0.4": (FormatV04, 2), "0.5": (FormatV05, 3)}


def make_compressor(settings: dict[str, Any], zarr_format: int = 2) -> Any:
    """The compressor of the config's `storage.compression` block, as numcodecs (Zarr 2) or zarr (Zarr 3) codec."""
    codec = settings["codec"]
    if codec not in ("blosc", "zstd"):
        raise ConfigError(f"unknown codec {codec!r}: expected 'blosc' or 'zstd'")
    if zarr_format == 3:
        if codec == "zstd":
            return zarr.codecs.ZstdCodec(level=settings["level"])
        shuffle = {"none": "noshuffle", "byte": "shuffle", "bit": "bitshuffle"}[settings["shuffle"]]
        return zarr.codecs.BloscCodec(cname=settings["cname"], clevel=settings["level"], shuffle=shuffle)
    if codec == "zstd":
        return numcodecs.Zstd(level=settings["level"])
    return numcodecs.Blosc(cname=settings["cname"], clevel=settings["level"], shuffle=_SHUFFLE[settings["shuffle"]])


def layout(path: str | os.PathLike) -> dict[str, Any]:
    """The (z, y, x) chunks and shards, NGFF version and pyramid choice of an image: what an image derived
    from it reuses."""
    attrs = image_attrs(path)
    if DERIVED_LAYOUT in attrs:  # a linked image: the config's layout, not that of the user's array
        given = attrs[DERIVED_LAYOUT]
        return {"chunks": tuple(given["chunks"]), "shards": tuple(given["shards"]) if given["shards"] else None,
                "ngff": given["ngff"], "pyramid": attrs.get(PYRAMID, True)}
    array = open_image(path)
    spatial = slice(array.ndim - 3, None)
    shards = array.shards[spatial] if array.shards else None
    return {"chunks": tuple(array.chunks[spatial]), "shards": shards,
            "ngff": "0.5" if array.metadata.zarr_format == 3 else "0.4",
            "pyramid": attrs.get(PYRAMID, True)}


def layout_unit(shape: Shape, chunks: Shape, shards: Shape | None) -> Shape:
    """The (z, y, x) shape of one stored file of an image of `shape` made with `chunks` and `shards`: its chunks
    clipped to the volume, or its shards clipped to the volume rounded up to whole chunks (what
    `chunk_files.stored_unit` reads back from the array once it exists)."""
    clipped = tuple(Coordinate(chunks).minimum(shape))
    return clipped if shards is None else tuple(Coordinate(shards).minimum(round_up(shape, clipped)))


def create_image(
    path: str | os.PathLike,
    shape: Shape,
    dtype: Any,
    chunks: Shape,
    compression: dict[str, Any],
    voxel_size: Sequence[float],
    unit: str,
    name: str,
    channels: int | None = None,
    labels: bool = False,
    shards: Shape | None = None,
    ngff: str = "0.4",
    pyramid: bool = True,
    origin: Sequence[float] | None = None,
) -> zarr.Array:
    """Create an empty OME-Zarr image (axes zyx, or czyx with `channels`) and return level 0.

    A `labels` image (cell ids) is marked as an NGFF label image, so napari
    opens it as a labels layer, and its pyramid takes the mode of each block
    instead of the mean (the multiscale's type, used by `write_pyramid`).
    `shards` (NGFF 0.5 only) groups chunks into one file each. Without
    `pyramid` the image keeps level 0 alone. `origin`: where voxel (0, 0, 0)
    lies, in `unit` (an ROI's offset in its volume); None: at 0.
    """
    fmt, zarr_format = NGFF_VERSIONS[ngff]
    if shards is not None and zarr_format != 3:
        raise ConfigError(f"{path}: shards need NGFF 0.5 (Zarr format 3), got NGFF {ngff}")
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    spatial = [{"name": axis, "type": "space", "unit": unit} for axis in "zyx"]
    axes = spatial if channels is None else [{"name": "c", "type": "channel"}, *spatial]
    lead = () if channels is None else (channels,)
    if shards is not None and any(s % c for s, c in zip(shards, chunks)):
        raise ConfigError(f"{path}: shards {list(shards)} must be multiples of the chunks {list(chunks)}")
    full_chunks = tuple(Coordinate(chunks).minimum(shape))
    full_shards = None if shards is None else lead + layout_unit(shape, chunks, shards)
    array = create_level(group, LEVEL0, lead + tuple(shape), lead + full_chunks, dtype,
                          make_compressor(compression, zarr_format), full_shards)
    write_multiscales(group, fmt(), axes, name, "mode" if labels else "mean", [(1, 1, 1)],
                       list(map(float, voxel_size)), origin)
    if labels:
        update_ngff_attrs(group, {"image-label": {"version": fmt().version}})
    group.attrs[PYRAMID] = pyramid
    return array


def link_image(path: str | os.PathLike, level0: str | os.PathLike, voxel_size: Sequence[float], unit: str,
               name: str, derived: dict[str, Any]) -> zarr.Array:
    """An OME-Zarr image at `path` whose level 0 is the existing (z, y, x) Zarr array, N5 dataset or HDF5 dataset
    (`file.h5/dataset`) at `level0`, read in place through a symbolic link: nothing is copied. Its NGFF version
    follows the array's Zarr format (`derived`'s for N5 and HDF5, which this pipeline alone reads through the
    link; viewers open the source itself); it has no pyramid of its own, and the images derived from it take
    the layout `derived` (chunks, shards, ngff, pyramid: see `layout`)."""
    hdf5 = hdf5_location(level0)
    if hdf5 is not None or is_n5_dataset(level0):
        ngff = derived["ngff"]
    else:
        ngff = "0.5" if zarr.open_array(str(level0), mode="r").metadata.zarr_format == 3 else "0.4"
    fmt, zarr_format = NGFF_VERSIONS[ngff]
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    target = hdf5[0] if hdf5 is not None else Path(level0)
    os.symlink(target.resolve(), Path(path) / LEVEL0, target_is_directory=hdf5 is None)
    axes = [{"name": axis, "type": "space", "unit": unit} for axis in "zyx"]
    write_multiscales(group, fmt(), axes, name, "mean", [(1, 1, 1)], list(map(float, voxel_size)))
    group.attrs.update({PYRAMID: derived["pyramid"],
                        DERIVED_LAYOUT: {key: derived[key] for key in ("chunks", "shards", "ngff")},
                        **({LINKED_DATASET: hdf5[1]} if hdf5 is not None else {})})
    return open_image(path)


def linked_level0(path: str | os.PathLike) -> Path | None:
    """The user's array that a linked image (see `link_image`) reads in place as its level 0 (`file.h5/dataset`
    for an HDF5 dataset), or None."""
    level0 = Path(path) / LEVEL0
    if not level0.is_symlink():
        return None
    target = level0.resolve()
    return target / image_attrs(path)[LINKED_DATASET] if target.is_file() else target


def level0_name(path: str | os.PathLike) -> Path:
    """How messages name an image's level 0: the user's array for a linked image."""
    return linked_level0(path) or Path(path) / LEVEL0


def create_like(path: str | os.PathLike, source: str | os.PathLike, dtype: Any, compression: dict[str, Any],
                name: str) -> zarr.Array:
    """An empty image at `path` of `dtype` with the shape, voxel size and layout (chunks, shards, NGFF version,
    pyramid) of the (z, y, x) image `source`: what a stage that maps voxels one to one writes."""
    voxel, unit = voxel_size(source)
    return create_image(path, open_image(source).shape, dtype, compression=compression, voxel_size=voxel, unit=unit,
                        name=name, origin=origin(source), **layout(source))


def create_level(group: zarr.Group, path: str, shape: Shape, chunks: Shape, dtype: Any, compressors: Any,
                  shards: Shape | None = None, overwrite: bool = False) -> zarr.Array:
    separator = {"name": "v2", "separator": "/"} if group.metadata.zarr_format == 2 else {"name": "default"}
    return group.create_array(path, shape=shape, chunks=chunks, shards=shards, dtype=dtype, compressors=compressors,
                              fill_value=0, chunk_key_encoding=separator, overwrite=overwrite)


def ngff_attrs(group: zarr.Group) -> dict[str, Any]:
    """The NGFF attributes of a group: top level in 0.4, under 'ome' in 0.5."""
    attrs = dict(group.attrs)
    return dict(attrs.get("ome", attrs))


def update_ngff_attrs(group: zarr.Group, values: dict[str, Any]) -> None:
    if group.metadata.zarr_format == 3:
        group.attrs["ome"] = {**group.attrs.get("ome", {}), **values}
    else:
        group.attrs.update(values)


def write_multiscales(group: zarr.Group, fmt: Any, axes: list[dict[str, str]], name: str, downsampling: str,
                       factors: list[Shape], voxel_size: list[float], origin: Sequence[float] | None = None) -> None:
    """NGFF multiscales metadata for levels 0.. with cumulative (z, y, x) `factors` relative to level 0.

    Each level's scale is the voxel size times its factor; its translation puts
    its voxel centres at the centres of the level-0 voxels they cover, shifted
    by `origin` (where level 0's first voxel lies; None: at 0).
    """
    lead = [1.0] * (len(axes) - 3)
    start = [float(v) for v in origin] if origin is not None else [0.0, 0.0, 0.0]
    datasets = []
    for level, factor in enumerate(factors):
        scale = [v * f for v, f in zip(voxel_size, factor)]
        transforms = [{"type": "scale", "scale": lead + scale}]
        shift = [o + (f - 1) * v / 2 for o, v, f in zip(start, voxel_size, factor)]
        if any(shift):
            transforms.append({"type": "translation", "translation": [0.0] * len(lead) + shift})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    write_multiscales_metadata(group, datasets, fmt=fmt, axes=axes, name=name)
    multiscales = ngff_attrs(group)["multiscales"]
    multiscales[0]["type"] = downsampling
    update_ngff_attrs(group, {"multiscales": multiscales})


def open_image(path: str | os.PathLike, mode: str = "r") -> zarr.Array:
    """Level 0 of an OME-Zarr image, with a clear error when it is missing or not an image (an `N5Array` or
    `HDF5Array`, read-only, for a linked N5 or HDF5 dataset: see `link_image`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such OME-Zarr image")
    linked = linked_level0(path)
    hdf5 = hdf5_location(linked) if linked is not None else None
    if linked is not None and (hdf5 is not None or is_n5_dataset(linked)):
        if mode != "r":
            kind = "HDF5" if hdf5 is not None else "N5"
            raise InputError(f"{path}: reads the {kind} dataset {linked} in place, which is never written")
        return HDF5Array(*hdf5) if hdf5 is not None else N5Array(linked)
    try:
        return zarr.open_array(str(path / LEVEL0), mode=mode)
    except (FileNotFoundError, zarr.errors.ArrayNotFoundError, zarr.errors.NodeTypeValidationError) as err:
        raise InputError(f"{path}: not an OME-Zarr image (no array at level {LEVEL0!r})") from err


def open_input(path: str | os.PathLike, sections: Sequence[int] | None = None) -> CheckedReads:
    """Level 0 of an image a stage reads, refused (naming the chunk files) unless every chunk is stored (every
    chunk holding one of `sections`, when given, for a stage that reads those alone); its reads name any
    chunk file that cannot be decoded."""
    array = open_image(path)
    name = level0_name(path)
    if sections is None:
        require_all_chunks(array, name)
    for z in sections or ():
        lead = array.ndim - 3  # channels
        region = Box((0,) * lead + (z, 0, 0), array.shape[:lead] + (z + 1, *array.shape[-2:]))
        require_all_chunks(array, name, region)
    return CheckedReads(array, name)


def open_checked(path: str | os.PathLike, fast: bool = False) -> CheckedReads:
    """Level 0 of an image to read, whose reads name any chunk file that cannot be decoded (see `open_input`,
    which also checks that every chunk is stored); `fast`: see `CheckedReads`."""
    return CheckedReads(open_image(path), level0_name(path), fast)


def image_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of an OME-Zarr image's group (multiscales, provenance, ...), with NGFF 0.5's 'ome'
    attributes at the top level as in 0.4."""
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    return {**attrs, **attrs.get("ome", {})}


def voxel_size(path: str | os.PathLike) -> tuple[list[float], str]:
    """The (z, y, x) voxel size and unit of an image, from its NGFF metadata."""
    multiscale = image_attrs(path)["multiscales"][0]
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    spatial = [i for i, axis in enumerate(multiscale["axes"]) if axis["type"] == "space"]
    return [scale[i] for i in spatial], multiscale["axes"][spatial[0]].get("unit", "")


def origin(path: str | os.PathLike) -> list[float]:
    """Where level 0's first voxel of an image lies (z, y, x), in its unit: its NGFF translation, else 0."""
    multiscale = image_attrs(path)["multiscales"][0]
    spatial = [i for i, axis in enumerate(multiscale["axes"]) if axis["type"] == "space"]
    for transform in multiscale["datasets"][0]["coordinateTransformations"]:
        if transform["type"] == "translation":
            return [float(transform["translation"][i]) for i in spatial]
    return [0.0, 0.0, 0.0]


def set_attrs(path: str | os.PathLike, **attrs: Any) -> None:
    """Add attributes (e.g. provenance) to an image's group."""
    zarr.open_group(str(path), mode="a").attrs.update(attrs)
    crash_points.passed(f"attributes {', '.join(attrs)} of {Path(path).name}")


