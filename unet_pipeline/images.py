"""OME-Zarr images on disk: create, open, metadata, provenance and atomic outputs.

Every array we write is an OME-NGFF image with a multiscale pyramid; level 0
lives at `<image>/0`. The default is NGFF 0.4 (Zarr format 2, '/' chunk
keys), which napari-ome-zarr, neuroglancer, tensorstore, ome-zarr-py and the
older readers still in use all open; NGFF 0.5 (Zarr format 3) is available
for sharded volumes with very many chunks. Later stages inherit the layout
(chunks, shards, version) of their input.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import shutil
import socket
import time
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

import dask.array as da
import numcodecs
import numpy as np
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_multiscales_metadata

from . import pyramid
from .chunk_files import CheckedReads, require_all_chunks
from .errors import ConfigError, InputError, OutputBusy
from .geometry import Coordinate, Shape, ceil_division, round_up

LEVEL0 = "0"
PYRAMID = "pyramid"  # group attribute: whether the image gets downsampled levels
# Every stage writes every chunk of its outputs, even one that is all fill value, so that a missing chunk
# file always means a lost one (see `chunk_files`); Zarr skips such chunks by default.
zarr.config.set({"array.write_empty_chunks": True})
_SHUFFLE = {"none": numcodecs.Blosc.NOSHUFFLE, "byte": numcodecs.Blosc.SHUFFLE, "bit": numcodecs.Blosc.BITSHUFFLE}


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
    array = open_image(path)
    spatial = slice(array.ndim - 3, None)
    shards = array.shards[spatial] if array.shards else None
    return {"chunks": tuple(array.chunks[spatial]), "shards": shards,
            "ngff": "0.5" if array.metadata.zarr_format == 3 else "0.4",
            "pyramid": image_attrs(path).get(PYRAMID, True)}


def write_unit(array: zarr.Array) -> Shape:
    """The smallest region parallel writers may own: a shard when sharded, else a chunk."""
    return tuple(array.shards or array.chunks)


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
) -> zarr.Array:
    """Create an empty OME-Zarr image (axes zyx, or czyx with `channels`) and return level 0.

    A `labels` image (cell ids) is marked as an NGFF label image, so napari
    opens it as a labels layer, and its pyramid takes the mode of each block
    instead of the mean (the multiscale's type, used by `write_pyramid`).
    `shards` (NGFF 0.5 only) groups chunks into one file each. Without
    `pyramid` the image keeps level 0 alone.
    """
    fmt, zarr_format = NGFF_VERSIONS[ngff]
    if shards is not None and zarr_format != 3:
        raise ConfigError(f"{path}: shards need NGFF 0.5 (Zarr format 3), got NGFF {ngff}")
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    spatial = [{"name": axis, "type": "space", "unit": unit} for axis in "zyx"]
    axes = spatial if channels is None else [{"name": "c", "type": "channel"}, *spatial]
    lead = () if channels is None else (channels,)
    full_chunks = tuple(Coordinate(chunks).minimum(shape))
    full_shards = None
    if shards is not None:
        if any(s % c for s, c in zip(shards, chunks)):
            raise ConfigError(f"{path}: shards {list(shards)} must be multiples of the chunks {list(chunks)}")
        # a shard never larger than the volume (rounded up to whole chunks)
        full_shards = lead + tuple(Coordinate(shards).minimum(round_up(shape, full_chunks)))
    array = create_level(group, LEVEL0, lead + tuple(shape), lead + full_chunks, dtype,
                          make_compressor(compression, zarr_format), full_shards)
    _write_multiscales(group, fmt(), axes, name, "mode" if labels else "mean", [(1, 1, 1)],
                       list(map(float, voxel_size)))
    if labels:
        _update_ome(group, {"image-label": {"version": fmt().version}})
    group.attrs[PYRAMID] = pyramid
    return array


def create_level(group: zarr.Group, path: str, shape: Shape, chunks: Shape, dtype: Any, compressors: Any,
                  shards: Shape | None = None, overwrite: bool = False) -> zarr.Array:
    separator = {"name": "v2", "separator": "/"} if group.metadata.zarr_format == 2 else {"name": "default"}
    return group.create_array(path, shape=shape, chunks=chunks, shards=shards, dtype=dtype, compressors=compressors,
                              fill_value=0, chunk_key_encoding=separator, overwrite=overwrite)


def _ome(group: zarr.Group) -> dict[str, Any]:
    """The NGFF attributes of a group: top level in 0.4, under 'ome' in 0.5."""
    attrs = dict(group.attrs)
    return dict(attrs.get("ome", attrs))


def _update_ome(group: zarr.Group, values: dict[str, Any]) -> None:
    if group.metadata.zarr_format == 3:
        group.attrs["ome"] = {**group.attrs.get("ome", {}), **values}
    else:
        group.attrs.update(values)


def _write_multiscales(group: zarr.Group, fmt: Any, axes: list[dict[str, str]], name: str, downsampling: str,
                       factors: list[Shape], voxel_size: list[float]) -> None:
    """NGFF multiscales metadata for levels 0.. with cumulative (z, y, x) `factors` relative to level 0.

    Each level's scale is the voxel size times its factor; its translation puts
    its voxel centres at the centres of the level-0 voxels they cover.
    """
    lead = [1.0] * (len(axes) - 3)
    datasets = []
    for level, factor in enumerate(factors):
        scale = [v * f for v, f in zip(voxel_size, factor)]
        transforms = [{"type": "scale", "scale": lead + scale}]
        if level:
            shift = [(f - 1) * v / 2 for v, f in zip(voxel_size, factor)]
            transforms.append({"type": "translation", "translation": [0.0] * len(lead) + shift})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    write_multiscales_metadata(group, datasets, fmt=fmt, axes=axes, name=name)
    multiscales = _ome(group)["multiscales"]
    multiscales[0]["type"] = downsampling
    _update_ome(group, {"multiscales": multiscales})


def _level_steps(group: zarr.Group, path: str | os.PathLike) -> list[Shape]:
    """Each pyramid level's (z, y, x) factor relative to the level before (see `pyramid.level_factors`);
    none when the image was made without a pyramid."""
    if not group.attrs.get(PYRAMID, True):
        return []
    level0 = group[LEVEL0]
    lead = level0.ndim - 3
    return pyramid.level_factors(voxel_size(path)[0], level0.shape[lead:], level0.chunks[lead:])


def _level_array(group: zarr.Group, level: int, shape: Shape, overwrite: bool) -> zarr.Array:
    """Level `level` of an image, with level 0's chunks, shards (clipped to its size) and codec; an existing
    array of that shape is reused unless `overwrite`."""
    if not overwrite and str(level) in group and group[str(level)].shape == tuple(shape):
        return group[str(level)]
    level0 = group[LEVEL0]
    chunks = tuple(Coordinate(level0.chunks).minimum(shape))
    shards = tuple(Coordinate(level0.shards).minimum(round_up(shape, chunks))) if level0.shards else None
    return create_level(group, str(level), shape, chunks, level0.dtype, level0.compressors, shards, overwrite=True)


def slab_levels(path: str | os.PathLike) -> list[tuple[zarr.Array, Shape, str]]:
    """The pyramid levels that each z-slab of level 0 determines on its own: the leading levels that halve
    only y and x. Made (or reopened, on resume) in the image; each with its factor (over all axes) relative
    to the level before and the downsampling method. Writers fill them slab by slab with level 0."""
    group = zarr.open_group(str(path), mode="a")
    level0 = group[LEVEL0]
    lead, method = level0.ndim - 3, _ome(group)["multiscales"][0]["type"]
    levels, shape = [], level0.shape
    if not group.attrs.get(PYRAMID, True):
        return levels
    for level, step in enumerate(_level_steps(group, path), start=1):
        if step[0] != 1:
            break
        full_step = (1,) * lead + step
        shape = tuple(ceil_division(shape, full_step))
        levels.append((_level_array(group, level, shape, overwrite=False), full_step, method))
    return levels


PYRAMID_BLOCK_BYTES = 4 << 20  # of the level a pyramid is read from, per task (its arithmetic needs a few times more)


def _write_levels(group: zarr.Group, source: zarr.Array, source_level: int, full_steps: list[Shape],
                  method: str) -> None:
    """Levels source_level + 1, ... from `source` by `full_steps`, in one Dask graph (see `write_pyramid`)."""
    factor = Coordinate(np.prod(full_steps, axis=0))
    previous = da.from_zarr(source, chunks=pyramid_block(write_unit(source), factor, source.shape,
                                                         source.dtype.itemsize))
    sources, targets = [], []
    for level, full_step in enumerate(full_steps, start=source_level + 1):
        previous = previous.map_blocks(pyramid.downsample, full_step, method, dtype=previous.dtype,
                                       chunks=tuple(tuple(Coordinate(c).ceil_division(f))
                                                    for c, f in zip(previous.chunks, full_step)))
        sources.append(previous)
        targets.append(_level_array(group, level, previous.shape, overwrite=True))
    da.store(sources, targets, lock=False)


def pyramid_block(unit: Shape, factor: Shape, shape: Shape, itemsize: int) -> Shape:
    """The block a pyramid is built in: the write unit times the whole pyramid's factor on each axis (so
    every level's part of a block is whole write units of that level, its last ones clipped at the volume's
    end), doubled axis by axis from the last until about `PYRAMID_BLOCK_BYTES` or the volume."""
    block = list(Coordinate(unit) * factor)
    for axis in reversed(range(len(block))):
        while math.prod(block) * itemsize < PYRAMID_BLOCK_BYTES and block[axis] < shape[axis]:
            block[axis] *= 2
    return tuple(block)


def write_pyramid(path: str | os.PathLike, levels_written: int = 0) -> int:
    """Add the downsampled levels of an image beyond the `levels_written` ones (see `slab_levels`), list
    every level in its metadata, and return how many levels there are beyond level 0.

    One Dask graph computes the next levels from the last written one, read
    once, in blocks of about `PYRAMID_BLOCK_BYTES` (see `pyramid_block`: each
    level's part of a block is whole write units of that level, so each task
    writes its part of every level in one call, lock-free), on the active
    Dask scheduler (a cluster's, inside `cluster.connect`); as many levels
    per graph as keep a write unit times their whole factor within that size. See `pyramid` for
    the factors and methods. Every level keeps level 0's chunks, shards and
    codec.
    """
    group = zarr.open_group(str(path), mode="a")
    multiscale = _ome(group)["multiscales"][0]
    steps = _level_steps(group, path)
    lead = group[LEVEL0].ndim - 3
    written = levels_written
    while written < len(steps):  # in stages when the whole factor would make blocks too large
        source = group[str(written)]
        full_steps = [(1,) * lead + steps[written]]
        block = Coordinate(write_unit(source)) * full_steps[0]  # a write unit of the stage's last level
        for step in steps[written + 1:]:
            block = block * ((1,) * lead + step)
            if math.prod(block) * source.dtype.itemsize > PYRAMID_BLOCK_BYTES:
                break
            full_steps.append((1,) * lead + step)
        _write_levels(group, source, written, full_steps, multiscale["type"])
        written += len(full_steps)
    factors = [tuple(int(np.prod(column)) for column in zip((1, 1, 1), *steps[:level]))
               for level in range(len(steps) + 1)]
    fmt = NGFF_VERSIONS["0.5" if group.metadata.zarr_format == 3 else "0.4"][0]()
    _write_multiscales(group, fmt, multiscale["axes"], multiscale["name"], multiscale["type"], factors,
                       voxel_size(path)[0])
    return len(steps)


def open_image(path: str | os.PathLike, mode: str = "r") -> zarr.Array:
    """Level 0 of an OME-Zarr image, with a clear error when it is missing or not an image."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such OME-Zarr image")
    try:
        return zarr.open_array(str(path / LEVEL0), mode=mode)
    except (FileNotFoundError, zarr.errors.ArrayNotFoundError, zarr.errors.NodeTypeValidationError) as err:
        raise InputError(f"{path}: not an OME-Zarr image (no array at level {LEVEL0!r})") from err


def open_input(path: str | os.PathLike) -> CheckedReads:
    """Level 0 of an image a stage reads, refused (naming the chunk files) unless every chunk is stored; its
    reads name any chunk file that cannot be decoded."""
    array = open_image(path)
    require_all_chunks(array, Path(path) / LEVEL0)
    return CheckedReads(array, Path(path) / LEVEL0)


def open_checked(path: str | os.PathLike, fast: bool = False) -> CheckedReads:
    """Level 0 of an image to read, whose reads name any chunk file that cannot be decoded (see `open_input`,
    which also checks that every chunk is stored); `fast`: see `CheckedReads`."""
    return CheckedReads(open_image(path), Path(path) / LEVEL0, fast)


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


def set_attrs(path: str | os.PathLike, **attrs: Any) -> None:
    """Add attributes (e.g. provenance) to an image's group."""
    zarr.open_group(str(path), mode="a").attrs.update(attrs)


BUSY_POLICIES = ("refuse", "wait")
_policy = {"on_busy": "refuse"}
_HELD: dict[Path, int] = {}
WAIT_POLL_S = 1.0
WAIT_REPORT_S = 60.0


def set_on_busy(policy: str) -> None:
    """What a writer does when another live process holds its output: 'refuse' (the default) or 'wait'.

    The Snakemake rules wait: Snakemake's own directory lock admits one run per
    working directory, so a busy output there is a job left running by a killed
    Snakemake, whose work the rerun should take over rather than fail on.
    """
    if policy not in BUSY_POLICIES:
        raise ConfigError(f"on_busy must be one of {BUSY_POLICIES}, got {policy!r}")
    _policy["on_busy"] = policy


def _writer_identity() -> str:
    job = os.environ.get("SLURM_JOB_ID")
    return f"pid {os.getpid()} on {socket.gethostname()}" + (f", Slurm job {job}" if job else "")


def _locks_current_file(handle: IO[str], lock: Path) -> bool:
    """Whether `handle` is still the file named `lock` (a releasing holder unlinks it)."""
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(lock).st_ino
    except FileNotFoundError:
        return False


def _acquire(path: Path, lock: Path) -> IO[str]:
    """Open and flock `lock`, refusing or waiting (see `set_on_busy`) while another process holds it."""
    waiting_since = reported = None
    while True:
        handle = open(lock, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "pid ?"
            handle.close()
            if _policy["on_busy"] == "refuse":
                raise OutputBusy(f"{path}: another run ({holder}) is writing this output; "
                                 "wait for it to finish or stop it") from None
            now = time.monotonic()
            waiting_since = waiting_since or now
            if reported is None or now - reported >= WAIT_REPORT_S:
                print(f"waiting for {path}: another run ({holder}) is writing it "
                      f"({now - waiting_since:.0f} s so far)", flush=True)
                reported = now
            time.sleep(WAIT_POLL_S)
            continue
        if _locks_current_file(handle, lock):
            return handle
        handle.close()  # we locked a file its releasing holder had just unlinked: lock the new one


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold `<path>.lock` while writing `path`; a second writer is refused at once (or waits, see `set_on_busy`).

    The lock is the kernel's (flock): it dies with its process, so a killed run
    never leaves it stuck. Re-entrant within one process. The lock file names
    its holder (pid, host, Slurm job) for the message a second writer gets.
    """
    path = Path(path).absolute()
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with _acquire(path, lock) as handle:
        handle.seek(0)
        handle.truncate()
        handle.write(_writer_identity())
        handle.flush()
        _HELD[path] = 1
        try:
            yield
        finally:
            del _HELD[path]
            lock.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Write an output at a temporary sibling path and move it into place on success.

    A crash leaves `<path>.partial`, never a `path` that looks complete; a
    second process writing the same output at the same time is refused.
    """
    with output_lock(path):
        partial = partial_path(path)
        remove(partial)
        partial.parent.mkdir(parents=True, exist_ok=True)
        yield partial
        commit(partial, path)


def partial_path(path: str | os.PathLike) -> Path:
    """Where an output is written before it is complete."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def commit(partial: Path, path: str | os.PathLike) -> None:
    """Move a finished output into place, replacing an older one."""
    remove(Path(path))
    os.replace(partial, path)


def remove(path: Path) -> None:
    """Delete a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
