"""A tissue mask at a coarser scale than its volume: which mask voxels a box of the volume overlaps.

A mask voxel covers `factor` volume voxels per axis (the last ones along an
axis may reach past the volume: masks are downsampled rounding up, as image
pyramids are). A mask cropped to a region of interest starts `offset` volume
voxels before the region's first voxel. Pure integer arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from .geometry import Box, Coordinate, Shape, ceil_division


def mask_factor(volume: Shape, mask: Shape) -> Coordinate | None:
    """The whole factor per axis that downsamples `volume` to `mask` (rounding up), None where there is none."""
    if len(volume) != len(mask) or any(m < 1 or m > v for v, m in zip(volume, mask)):
        return None
    factor = ceil_division(volume, mask)  # the smallest factor that gives no more than `mask` voxels
    return factor if ceil_division(volume, factor) == tuple(mask) else None


@dataclass(frozen=True)
class MaskGrid:
    """How volume voxel v maps to a mask voxel: (v + offset) // factor."""

    factor: Coordinate
    offset: Coordinate

    @classmethod
    def of(cls, factor: Shape, offset: Shape | None = None) -> "MaskGrid":
        return cls(Coordinate(factor), Coordinate(offset or (0,) * len(factor)))

    def cover(self, box: Box) -> Box:
        """The mask voxels that `box` of the volume overlaps."""
        return Box((box.start + self.offset) // self.factor, (box.stop + self.offset).ceil_division(self.factor))

    def cropped(self, region: Box) -> tuple[Box, "MaskGrid"]:
        """The mask voxels a region of interest overlaps, and the grid of the region in that crop."""
        crop = self.cover(region)
        return crop, MaskGrid(self.factor, region.start + self.offset - crop.start * self.factor)
