"""Ingest: bring a raw, label or tissue-mask stack into our OME-Zarr layout, resumably, or link a chunked raw
in place.

Sources (see `sources`) are read lazily and copied in slabs of whole output
chunks along z, on Dask's threads, so memory stays bounded by a few slabs
whatever the volume size. Each finished slab is recorded: a killed ingest
resumes at the first missing slab.

A raw source that is already a chunked (z, y, x) uint8 or uint16 Zarr array
(plain, or level 0 of an OME-Zarr image), N5 dataset or HDF5 dataset with every
chunk stored is not copied: the output is a linked image (`ome_zarr.link_image`) that reads it in
place. Float sources are copied, as the copy is where NaN and Inf are refused.

A tissue mask (nonzero = tissue) may be coarser than its volume by a whole
factor per axis; it is stored at its own scale, cropped to the volume's roi,
with the grid that maps the volume onto it (see `storage.tissue_mask`).
"""

from __future__ import annotations

import os
from typing import Any, Literal, Sequence

import dask.array as da
import numpy as np

from ..core.annotation import ignore_label_of
from ..core.errors import InputError
from ..core.geometry import Box, Shape
from ..core.mask_grid import MaskGrid, mask_factor
from ..core.stage_settings import checked_stage
from ..distributed import records
from ..storage import chunk_files, ome_zarr, outputs, provenance, tissue_mask
from ..storage.sources import in_place_array, open_source, source_file, source_voxel_size

RAW_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)
IN_PLACE_DTYPES = (np.uint8, np.uint16)


def check_source(spec: str | os.PathLike, array: Any, kind: str) -> None:
    """Refuse a source whose type or shape cannot be `kind` ('raw', 'labels' or 'mask'), naming it."""
    dtype = np.dtype(array.dtype)
    if kind == "raw" and dtype not in RAW_DTYPES:
        raise InputError(f"{spec}: raw must be uint8, uint16 or float (32 or 64 bit), got {dtype}")
    if kind == "labels" and not np.issubdtype(dtype, np.integer):
        raise InputError(f"{spec}: labels must be integers (0 = membrane, >0 = cell), got {dtype}")
    if kind == "mask" and not (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
        raise InputError(f"{spec}: a tissue mask must be integers or booleans (nonzero = tissue), got {dtype}")
    if 0 in array.shape:
        raise InputError(f"{spec}: the volume is empty (shape {array.shape})")


def storage_dtype(kind: str, dtype: Any) -> np.dtype:
    """Raw keeps uint8/uint16 and stores float as float32; labels keep an unsigned type, else uint32; a mask is
    uint8 (1 = tissue)."""
    dtype = np.dtype(dtype)
    if kind == "mask":
        return np.dtype(np.uint8)
    if kind == "raw":
        return np.dtype(np.float32) if np.issubdtype(dtype, np.floating) else dtype
    return dtype if np.issubdtype(dtype, np.unsignedinteger) else np.dtype(np.uint32)


def open_label_mask(spec: str, labels: str | os.PathLike, shape: Shape, missing_chunks: str) -> Any:
    """The label mask `spec` of the labels `labels`, refused unless it has their shape."""
    mask = open_source(spec, refuse_missing_chunks=missing_chunks == "refuse")
    if tuple(mask.shape) != tuple(shape):
        raise InputError(f"{spec}: label_mask shape {tuple(mask.shape)} differs from the labels' {tuple(shape)} "
                         f"({labels}); volumes.<volume>.label_mask must cover the labels voxel for voxel")
    return mask


def roi_box(spec: str | os.PathLike, roi: dict[str, list[int]], shape: Shape) -> Box:
    """The box `roi` ({'start', 'shape'}, z y x) of a source of `shape`, refused unless it lies inside."""
    box = Box(tuple(roi["start"]), tuple(s + n for s, n in zip(roi["start"], roi["shape"])))
    if any(n < 1 for n in roi["shape"]) or any(s < 0 for s in roi["start"]) or \
            any(stop > size for stop, size in zip(box.stop, shape)):
        raise InputError(f"{spec}: roi (start {list(roi['start'])}, shape {list(roi['shape'])}) reaches outside the "
                         f"volume (shape {tuple(shape)}); volumes.<volume>.roi must lie inside it")
    return box


def mask_region(spec: str | os.PathLike, array: Any, raw: str | os.PathLike,
                roi: dict[str, list[int]] | None) -> tuple["RegionView", MaskGrid, Box]:
    """The part of the tissue mask `array` that the volume's roi (None: all of it) covers, the grid of the volume
    in it, and the volume's box in the raw `raw`; refused unless the mask is the raw at a whole factor per axis."""
    shape = tuple(open_source(raw).shape)  # nothing but the shape is read
    factor = mask_factor(shape, tuple(array.shape))
    if factor is None:
        sixteenth = tuple(-(-n // 16) for n in shape)
        raise InputError(f"{spec}: mask shape {tuple(array.shape)} is not the shape {shape} of {raw} downsampled by a "
                         f"whole factor per axis, rounding up (e.g. {sixteenth} at 1/16); volumes.<volume>.mask must "
                         "be the volume at a coarser (or the same) scale")
    region = roi_box(raw, roi, shape) if roi is not None else Box.of_shape(shape)
    crop, grid = MaskGrid.of(factor).cropped(region)
    return RegionView(array, crop), grid, region


class RegionView:
    """A box of a lazily sliced (z, y, x) source, sliced like an array of the box's shape: reads only the box."""

    def __init__(self, array: Any, box: Box) -> None:
        self.array, self.box = array, box
        self.shape, self.dtype, self.ndim = tuple(box.shape), np.dtype(array.dtype), 3

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        parts = key + (slice(None),) * (3 - len(key))
        return self.array[tuple(slice(start + p.indices(n)[0], start + p.indices(n)[1])
                                for p, start, n in zip(parts, self.box.start, self.shape))]


def in_place_level0(kind: str, source: str | os.PathLike, array: Any, in_place: bool,
                    missing_chunks: str) -> os.PathLike | None:
    """The Zarr array, N5 or HDF5 dataset ingest links instead of copying (see the module docstring), or None
    to copy."""
    if kind != "raw" or not in_place or missing_chunks != "refuse" or np.dtype(array.dtype) not in IN_PLACE_DTYPES:
        return None
    return in_place_array(source)


def checked_block(block: np.ndarray, spec: str, kind: str, dtype: np.dtype,
                  block_info: dict | None = None) -> np.ndarray:
    """A source block converted to `dtype`, refusing NaN/Inf raw values and negative labels by position."""
    z0 = block_info[0]["array-location"][0][0] if block_info else 0
    if kind == "mask":
        return (block != 0).astype(dtype)
    bad = ~np.isfinite(block) if np.issubdtype(block.dtype, np.floating) else (block < 0) if kind == "labels" else None
    if bad is not None and bad.any():
        z, y, x = np.argwhere(bad)[0]
        what = "raw has NaN or Inf values" if kind == "raw" else "labels have negative values"
        raise InputError(f"{spec}: {what} ({int(bad.sum())} in sections {z0}-{z0 + len(block) - 1}, "
                            f"first at z={z0 + z}, y={y}, x={x}); replace them before ingest")
    return block.astype(dtype, copy=False)


@checked_stage
def ingest(kind: Literal["raw", "labels", "mask"], source: str | os.PathLike, output: str | os.PathLike, *,
           chunks: Shape, compression: dict[str, Any], voxel_size: Sequence[float] | None, unit: str,
           shards: Shape | None = None, ngff: Literal["0.4", "0.5"] = "0.4", pyramid: bool = True,
           missing_chunks: Literal["refuse", "fill"] = "refuse", in_place: bool = True,
           roi: dict[str, list[int]] | None = None, label_mask: str | None = None,
           ignore_label: int | None = None, mask_of: str | None = None) -> dict[str, int]:
    """Copy `source` into the OME-Zarr image `output` (`kind`: 'raw', 'labels' or a tissue 'mask'), or link a
    chunked raw source (see the module docstring); returns slab counts (none for a link).

    Args:
        chunks: (z, y, x) chunk shape of the image; every later stage inherits it.
        compression: the config's `storage.compression` block.
        voxel_size: (z, y, x) in `unit`; None takes the voxel size and unit from
            the source's own metadata (see `sources.source_voxel_size`).
        unit: 'nanometer', 'micrometer' or 'angstrom'.
        shards: (z, y, x) shard shape, multiples of `chunks` (NGFF 0.5 only); None: no shards.
        ngff: '0.4' (Zarr format 2) or '0.5' (Zarr format 3).
        pyramid: write the downsampled levels too.
        missing_chunks: a Zarr, N5 or HDF5 source with chunks that were never
            written is refused ('refuse') or read as its fill value ('fill').
        in_place: link a raw source that can be read in place instead of copying it; with False,
            every source is copied.
        roi: {'start': (z, y, x), 'shape': (z, y, x)}: ingest this box of the source alone (always copied),
            placed at its offset by the NGFF translation; None: the whole source.
        label_mask: labels only: a source of the labels' shape, nonzero where they are annotated; the
            voxels outside it get the unannotated label (see `core.annotation`), labels stored as uint32 at least.
        ignore_label: labels only: the value of unannotated voxels (None: `core.annotation.UNANNOTATED` with
            a `label_mask`); refused when the labels' type cannot hold it.
        mask_of: mask only: the raw source of the volume whose tissue it marks (its shape sets the mask's scale;
            its metadata the voxel size, when `voxel_size` is None).
    """
    started = provenance.now()
    array = open_source(source, refuse_missing_chunks=missing_chunks == "refuse")
    check_source(source, array, kind)
    mask = open_label_mask(label_mask, source, array.shape, missing_chunks) if label_mask and kind == "labels" else None
    grid = region = None
    if kind == "mask":
        if mask_of is None:
            raise InputError(f"{source}: ingest of a tissue mask needs the raw source it belongs to (mask_of)")
        array, grid, region = mask_region(source, array, mask_of, roi)
    elif roi is not None:
        box = roi_box(source, roi, array.shape)
        array, mask = RegionView(array, box), mask if mask is None else RegionView(mask, box)
    if voxel_size is None:
        found = source_voxel_size(mask_of if kind == "mask" else source)
        if found is None:
            raise InputError(f"{mask_of if kind == 'mask' else source}: its metadata has no voxel size; set the "
                             "volume's voxel_size (z, y, x) and unit in the config (volumes.<volume>.voxel_size)")
        voxel_size, unit = found
    dtype = storage_dtype(kind, array.dtype)
    unannotated = ignore_label_of(ignore_label, label_mask) if kind == "labels" else None
    if mask is not None:
        dtype = np.promote_types(dtype, np.uint32)
    if unannotated is not None and unannotated > np.iinfo(dtype).max:
        raise InputError(f"{source}: ignore_label {unannotated} cannot occur in its {dtype} labels; set "
                         "volumes.<volume>.ignore_label to a value of their type")
    level0 = in_place_level0(kind, source, array, in_place and roi is None, missing_chunks)
    settings = {"kind": kind, "chunks": list(chunks), "compression": compression, "voxel_size": list(voxel_size),
                "unit": unit, "shards": list(shards) if shards else None, "ngff": ngff,
                "pyramid": pyramid, "in_place": level0 is not None, "roi": roi, "label_mask": label_mask,
                "ignore_label": ignore_label, "mask_of": mask_of}
    origin = [s * v for s, v in zip(roi["start"], voxel_size)] if roi else None
    stored_voxel = voxel_size
    if grid is not None:  # the mask's voxels, centred on the volume voxels they cover
        stored_voxel = [v * f for v, f in zip(voxel_size, grid.factor)]
        origin = [(s - o + (f - 1) / 2) * v for s, o, f, v in zip(region.start, grid.offset, grid.factor, voxel_size)]
    inputs = {"source": str(source_file(source)), **({"label_mask": str(source_file(label_mask))} if mask else {})}
    fingerprints = provenance.fingerprint_inputs(inputs)
    mapped = {"grid": tissue_mask.grid_attrs(grid, region.shape)} if grid is not None else {}  # the raw's shape
    key = records.run_key(source=str(source), fingerprint=fingerprints["source"], dtype=str(dtype), **settings,
                          **mapped)
    if level0 is not None:
        record = provenance.record("ingest", settings, inputs, started, fingerprints, source_spec=str(source),
                                   in_place=str(level0), run_key=key)
        return _link(output, level0, record)

    def create(partial: os.PathLike) -> Any:
        return ome_zarr.create_image(partial, array.shape, dtype, chunks, compression, stored_voxel, unit,
                                     name=kind, labels=kind != "raw", shards=shards, ngff=ngff,
                                     pyramid=pyramid and kind != "mask", origin=origin)

    with records.resumable_image(output, key, create) as target:
        if target is None:
            return records.kept_complete(output, "ingest")
        lazy = da.from_array(array, chunks=(chunk_files.stored_unit(target.array)[0], -1, -1), name=False,
                             meta=np.empty((0, 0, 0), array.dtype))
        converted = lazy.map_blocks(checked_block, str(source), kind, dtype, dtype=dtype)
        if mask is not None:
            annotated = da.from_array(mask, chunks=lazy.chunks, name=False, meta=np.empty((0, 0, 0), mask.dtype))
            converted = da.where(annotated != 0, converted, dtype.type(unannotated))
        stats = records.store_slabs(converted, target, f"ingest {kind}")
        if grid is not None:
            ome_zarr.set_attrs(target.partial, **{tissue_mask.ATTR: mapped["grid"]})
        ome_zarr.set_attrs(target.partial, provenance=provenance.record(
            "ingest", settings, inputs, started, fingerprints, source_spec=str(source), slabs=stats))
    return stats


def _link(output: str | os.PathLike, level0: os.PathLike, record: dict[str, Any]) -> dict[str, int]:
    """Write the linked image `output` reading `level0` in place (kept when complete for this run key)."""
    with outputs.output_lock(output):
        if records.complete_for(output, record["run_key"]):
            return records.kept_complete(output, "ingest")
        settings = record["settings"]
        with outputs.atomic_output(output) as partial:
            ome_zarr.link_image(partial, level0, settings["voxel_size"], settings["unit"], name="raw",
                                derived={key: settings[key] for key in ("chunks", "shards", "ngff", "pyramid")})
            ome_zarr.set_attrs(partial, provenance=record)
    print(f"ingest: {output} reads {level0} in place (nothing copied)", flush=True)
    return {"blocks": 0, "computed": 0, "resumed": 0}
