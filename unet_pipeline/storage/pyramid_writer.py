"""Writing the multiscale pyramid of an OME-Zarr image: the downsampled levels, in blocks on Dask, and their
NGFF metadata (see `pyramid` for which axes each level halves and how a block is downsampled).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import dask.array as da
import numpy as np
import zarr

from ..core.geometry import Coordinate, Shape, ceil_division, round_up
from . import crash_points, pyramid
from .chunk_files import stored_unit
from .ome_zarr import LEVEL0, NGFF_VERSIONS, PYRAMID, create_level, ngff_attrs, origin, voxel_size, write_multiscales


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
    lead, method = level0.ndim - 3, ngff_attrs(group)["multiscales"][0]["type"]
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
    previous = da.from_zarr(source, chunks=pyramid_block(stored_unit(source), factor, source.shape,
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
    multiscale = ngff_attrs(group)["multiscales"][0]
    steps = _level_steps(group, path)
    lead = group[LEVEL0].ndim - 3
    written = levels_written
    while written < len(steps):  # in stages when the whole factor would make blocks too large
        source = group[str(written)]
        full_steps = [(1,) * lead + steps[written]]
        block = Coordinate(stored_unit(source)) * full_steps[0]  # a write unit of the stage's last level
        for step in steps[written + 1:]:
            block = block * ((1,) * lead + step)
            if math.prod(block) * source.dtype.itemsize > PYRAMID_BLOCK_BYTES:
                break
            full_steps.append((1,) * lead + step)
        _write_levels(group, source, written, full_steps, multiscale["type"])
        written += len(full_steps)
        crash_points.passed(f"pyramid levels to {written} of {Path(path).name}")
    factors = [tuple(int(np.prod(column)) for column in zip((1, 1, 1), *steps[:level]))
               for level in range(len(steps) + 1)]
    fmt = NGFF_VERSIONS["0.5" if group.metadata.zarr_format == 3 else "0.4"][0]()
    write_multiscales(group, fmt, multiscale["axes"], multiscale["name"], multiscale["type"], factors,
                       voxel_size(path)[0], origin(path))
    crash_points.passed(f"multiscales of {Path(path).name}")
    return len(steps)
