"""The U-Net paper's weight map: class balance plus a separation-border term.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

d1, d2: distances to the nearest and second-nearest cell. The border term is
applied on membrane (background) pixels only, where it pulls the network
towards the thin gaps between touching cells; inside cells d1 = 0 and the term
carries no separation meaning. A section with fewer than two cells has no
second-nearest cell: its border term is 0.
"""

from __future__ import annotations

import os
from typing import Any

import dask.array as da
import numpy as np
from scipy import ndimage

from . import io, provenance
from .cells import separate_cells


def border_term(cells: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) on background pixels, by one distance map per cell."""
    n_cells = int(cells.max())
    term = np.zeros(cells.shape, dtype=np.float32)
    if n_cells < 2:
        return term
    nearest = np.full(cells.shape, np.inf)
    second = np.full(cells.shape, np.inf)
    for cell in range(1, n_cells + 1):
        distance = ndimage.distance_transform_edt(cells != cell)
        second = np.minimum(second, np.maximum(nearest, distance))
        nearest = np.minimum(nearest, distance)
    background = cells == 0
    term[background] = w0 * np.exp(-((nearest[background] + second[background]) ** 2) / (2 * sigma**2))
    return term


def class_weights(foreground_fraction: float, mode: str | list[float]) -> tuple[float, float]:
    """(membrane, cell) weights: inverse class frequency ('balanced'), ones ('none'), or given."""
    if mode == "none":
        return 1.0, 1.0
    if mode == "balanced":
        if not 0 < foreground_fraction < 1:
            raise ValueError(
                f"cannot balance classes: the labels are {foreground_fraction:.0%} cell; they need both membrane and cell"
            )
        return 0.5 / (1 - foreground_fraction), 0.5 / foreground_fraction
    membrane, cell = mode
    return float(membrane), float(cell)


def weight_map(labels: np.ndarray, w0: float, sigma: float, balance: tuple[float, float]) -> np.ndarray:
    """Weights for a (z, y, x) label block, section by section (float32)."""
    out = np.empty(labels.shape, dtype=np.float32)
    for z, section in enumerate(labels):
        cells = separate_cells(section)
        out[z] = np.where(cells > 0, balance[1], balance[0]) + border_term(cells, w0, sigma)
    return out


def weights(labels_path: str | os.PathLike, output: str | os.PathLike, w0: float, sigma: float,
            class_balance: str | list[float], compression: dict[str, Any]) -> None:
    """Write the weight map of the label image at `output` (float32, same chunks)."""
    started = provenance.now()
    labels_array = io.open_image(labels_path)
    labels = da.from_zarr(labels_array)
    foreground = float((labels > 0).mean().compute())
    balance = class_weights(foreground, class_balance)
    whole_sections = labels.rechunk((labels_array.chunks[0], -1, -1))
    weight = whole_sections.map_blocks(weight_map, w0, sigma, balance, dtype=np.float32)
    voxel, unit = io.voxel_size(labels_path)
    with io.atomic_output(output) as partial:
        target = io.create_image(partial, labels.shape, np.float32, labels_array.chunks, compression, voxel, unit,
                                 "weights")
        da.store(weight.rechunk(target.chunks), target, lock=False)
        settings = {"w0": w0, "sigma": sigma, "class_balance": class_balance}
        io.set_attrs(partial, provenance=provenance.record("weights", settings, {"labels": str(labels_path)}, started,
                                                           class_weights=list(balance)))
