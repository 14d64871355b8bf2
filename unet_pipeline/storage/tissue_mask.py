"""A volume's tissue mask as ingest stores it (`mask.ome.zarr`): at its own scale, with the grid that maps the
volume onto it, asked by predict and segment whether a tile or block touches any tissue."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..core.errors import InputError
from ..core.geometry import Box, Shape
from ..core.mask_grid import MaskGrid
from . import ome_zarr

ATTR = "tissue_mask"  # group attribute: {'factor', 'offset', 'volume'} (see `core.mask_grid`)


def grid_attrs(grid: MaskGrid, volume: Shape) -> dict[str, Any]:
    """The attribute ingest writes: the grid, and the shape of the volume the mask is of."""
    return {"factor": list(grid.factor), "offset": list(grid.offset), "volume": list(volume)}


class TissueMask:
    """The mask image at `path` (nonzero = tissue) of a volume of shape `volume`, read a box at a time."""

    def __init__(self, path: str | os.PathLike, volume: Shape, image: str | os.PathLike) -> None:
        attrs = ome_zarr.image_attrs(path).get(ATTR)
        if attrs is None:
            raise InputError(f"{path}: not a tissue mask written by ingest (no '{ATTR}' attribute)")
        if tuple(attrs["volume"]) != tuple(volume):
            raise InputError(f"{path}: a mask of a volume of shape {tuple(attrs['volume'])}, but {image} has shape "
                             f"{tuple(volume)}; ingest the volume's mask again")
        self.path, self.grid = str(path), MaskGrid.of(attrs["factor"], attrs["offset"])
        self.array = ome_zarr.open_input(path)

    def touches(self, box: Box) -> bool:
        """Whether any voxel of `box` (of the volume) lies in a mask voxel of tissue."""
        return bool(np.any(self.array[self.grid.cover(box).clip(self.array.shape).slices()]))


def open_mask(path: str | os.PathLike | None, volume: Shape, image: str | os.PathLike) -> TissueMask | None:
    """The tissue mask at `path` of `image` (of shape `volume`), or None for no mask."""
    return None if path is None else TissueMask(path, volume, image)
