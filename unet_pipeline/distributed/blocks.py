"""The block grid of blockwise stages: each block's write region, the region it reads, and its id space.

A block owns whole output chunks (its write region); it reads that region
grown by a context, clipped to the volume (clipping, not mirroring: the
whole-volume computation ends at the same border). Ids a block makes are
unique without coordination: the block's index sits in the high bits of a
uint64 (`global_ids`), so no two blocks ever hand out the same id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..core.geometry import Box, Coordinate, Shape, ceil_division, grid_indices

LOCAL_ID_BITS = 32  # a block holds at most 2**32 - 1 ids of its own


@dataclass(frozen=True)
class Block:
    """One block of a grid: its index (C order), grid position and write region."""

    index: int
    position: Shape
    box: Box

    @property
    def name(self) -> str:
        """The key of its completion record (see `block_name`)."""
        return block_name(self.box.start)

    def read_box(self, context: Shape, volume: Shape) -> Box:
        """The write region grown by `context` voxels on each side, clipped to the volume."""
        return self.box.grow(context, context).clip(volume)


@dataclass(frozen=True)
class BlockSelection:
    """The blocks of a grid that a run computes (those a tissue mask touches), by index, as packed bits: small
    enough to travel with every task."""

    bits: bytes
    count: int

    @classmethod
    def of(cls, kept: Sequence[bool]) -> "BlockSelection":
        return cls(np.packbits(np.asarray(kept, bool)).tobytes(), len(kept))

    def kept(self) -> np.ndarray:
        """Whether each block of the grid is computed, by index."""
        return np.unpackbits(np.frombuffer(self.bits, np.uint8), count=self.count).astype(bool)

    def __contains__(self, index: int) -> bool:
        return bool(self.bits[index >> 3] >> (7 - (index & 7)) & 1)


def block_name(start: Sequence[int]) -> str:
    """The key of a block's or tile's completion record: its start voxel, '0_256_512'."""
    return "_".join(map(str, start))


def aligned_block_shape(requested: Shape, unit: Shape, volume: Shape) -> Shape:
    """`requested` rounded up to whole write units (chunks or shards), never beyond the volume's units."""
    return Coordinate(requested).round_up(unit).minimum(Coordinate(volume).round_up(unit))


def block_grid(volume: Shape, block: Shape) -> list[Block]:
    """The blocks of shape `block` covering `volume` (the last ones clipped), in C order."""
    return [Block(index, position, Box.unit(position, block, volume))
            for index, position in enumerate(grid_indices(volume, block))]


def global_ids(local: np.ndarray, block_index: int | np.ndarray) -> np.ndarray:
    """Block-local ids (0 = none) as uint64 ids unique across blocks: the block index (one, or one per
    voxel) in the high bits."""
    local = np.asarray(local).astype(np.uint64)
    high = np.left_shift(np.asarray(block_index, dtype=np.uint64), np.uint64(LOCAL_ID_BITS))
    return np.where(local > 0, local | high, np.uint64(0))


def block_indices(box: Box, block: Shape, volume: Shape) -> np.ndarray:
    """The index of the block (of a `block_grid(volume, block)`) holding each voxel of `box`."""
    counts = ceil_division(volume, block)
    positions = np.ix_(*(np.arange(a, b) // s for a, b, s in zip(box.start, box.stop, block)))
    return np.ravel_multi_index(positions, counts)


def split_global_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(block index, local id) of uint64 ids made by `global_ids`."""
    ids = np.asarray(ids, dtype=np.uint64)
    local = ids & np.uint64((1 << LOCAL_ID_BITS) - 1)
    return (ids >> np.uint64(LOCAL_ID_BITS)).astype(np.int64), local.astype(np.int64)
