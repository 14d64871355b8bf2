"""The U-Net paper's weight map: class balance plus a separation-border term.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

d1, d2: distances to the nearest and second-nearest cell (in pixels of the
x axis; voxel spacing is respected in 3D). Choices where the paper is silent:

- The border term is applied on membrane (background) pixels only, where it
  pulls the network towards the gaps between touching cells; inside a cell
  d1 = 0 and the term has no separation meaning. Weights there are w_c alone.
- A section (2D) or volume (3D) with fewer than two cells has no
  second-nearest cell: its border term is 0. An all-membrane section is all
  w_c(membrane).
- Cells touching the volume border are cells like any other: distances are
  measured inside the volume only, nothing is mirrored.

Exact up to a stated tolerance, fast: the term falls below `tolerance * w0`
once d1 + d2 exceeds D = sigma * sqrt(2 ln(1 / tolerance)). For each membrane
pixel a compiled kernel visits the pixels around it in order of distance
(physical distance, so anisotropic spacing is exact) and stops at the first
pixel of a second cell, or once no cell found further out could bring
d1 + d2 under D. Distances are those of the Euclidean distance transform
(pixel centre to pixel centre); only terms below the tolerance are dropped.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import dask.array as da
import numba
import numpy as np

from ..core.errors import InputError
from ..core.stage_settings import checked_stage
from ..distributed import records
from ..segmentation.cells import annotated, cell_mask, check_ignore_label, separate_cells, volume_cells, without_ignored
from ..storage import ome_zarr, provenance


def cutoff_distance(sigma: float, tolerance: float) -> float:
    """D: beyond d1 + d2 = D the border term is below `tolerance * w0`."""
    return sigma * math.sqrt(2 * math.log(1 / tolerance))


def sorted_offsets(cutoff: float, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Integer offsets within physical distance `cutoff`, nearest first, and their distances."""
    reach = [int(cutoff // s) for s in spacing]
    grid = np.stack(np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij"), axis=-1)
    grid = grid.reshape(-1, len(spacing))
    distance = np.sqrt(((grid * np.asarray(spacing)) ** 2).sum(axis=1))
    keep = (distance > 0) & (distance <= cutoff)
    order = np.argsort(distance[keep], kind="stable")
    return grid[keep][order], distance[keep][order]


@numba.njit(cache=True, nogil=True)
def _two_nearest(cells: np.ndarray, sites: np.ndarray, steps: np.ndarray, distances: np.ndarray,
                 cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """For each site (flat index into `cells`), distances to the nearest and second-nearest cell."""
    nearest = np.full(sites.size, np.inf)
    second = np.full(sites.size, np.inf)
    for i in range(sites.size):
        site = sites[i]
        first = 0
        for j in range(steps.size):
            distance = distances[j]
            if (first == 0 and 2 * distance > cutoff) or (first != 0 and nearest[i] + distance > cutoff):
                break
            label = cells[site + steps[j]]
            if label > 0:
                if first == 0:
                    first = label
                    nearest[i] = distance
                elif label != first:
                    second[i] = distance
                    break
    return nearest, second


def border_term(cells: np.ndarray, w0: float, sigma: float, spacing: Sequence[float] | None = None,
                tolerance: float = 1e-3) -> np.ndarray:
    """w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) on background pixels, within `tolerance * w0` of exact."""
    spacing = tuple(spacing) if spacing is not None else (1.0,) * cells.ndim
    term = np.zeros(cells.shape, dtype=np.float32)
    if w0 == 0 or cells.max() < 2:
        return term
    cutoff = cutoff_distance(sigma, tolerance)
    offsets, distances = sorted_offsets(cutoff, spacing)
    pad = [int(cutoff // s) + 1 for s in spacing]
    padded = np.pad(cells.astype(np.int32, copy=False), [(p, p) for p in pad])  # 0 around: no cells outside
    strides = np.array([int(np.prod(padded.shape[axis + 1 :])) for axis in range(cells.ndim)])
    background = np.nonzero(cells == 0)
    sites = np.ravel_multi_index(tuple(b + p for b, p in zip(background, pad)), padded.shape)
    nearest, second = _two_nearest(padded.ravel(), sites, offsets @ strides, distances, cutoff)
    term[background] = w0 * np.exp(-((nearest + second) ** 2) / (2 * sigma**2))
    return term


def class_weights(foreground_fraction: float, mode: str | list[float]) -> tuple[float, float]:
    """(membrane, cell) weights: inverse class frequency ('balanced'), ones ('none'), or given."""
    if mode == "none":
        return 1.0, 1.0
    if mode == "balanced":
        if not 0 < foreground_fraction < 1:
            raise InputError(
                f"cannot balance classes: the labels are {foreground_fraction:.0%} cell; "
                "they need both membrane and cell"
            )
        return 0.5 / (1 - foreground_fraction), 0.5 / foreground_fraction
    membrane, cell = mode
    return float(membrane), float(cell)


def weight_map(cells: np.ndarray, w0: float, sigma: float, balance: tuple[float, float],
               spacing: Sequence[float], tolerance: float, sectionwise: bool) -> np.ndarray:
    """Weights (float32) of a block of cell ids: per (y, x) section, or as one 3D block."""
    if sectionwise:
        return np.stack([weight_map(section, w0, sigma, balance, spacing[-2:], tolerance, False)
                         for section in cells])
    return np.where(cells > 0, balance[1], balance[0]).astype(np.float32) + border_term(
        cells, w0, sigma, spacing, tolerance)


def cell_fraction(labels: da.Array, mode: str, ignore_label: int | None = None) -> float:
    """The share of cell pixels among the annotated ones (all but those of `ignore_label`) once touching instances
    are split by background (what training sees as cell), per section ('2d') or in 3D ('3d')."""
    cells = labels.map_blocks(without_ignored, ignore_label, dtype=labels.dtype)
    if mode == "2d":
        mask = cells.map_overlap(lambda block: np.stack([cell_mask(section) for section in block]),
                                 depth=(0, 1, 1), boundary="none", dtype=bool)
    else:
        mask = cells.map_overlap(cell_mask, depth=(1, 1, 1), boundary="none", dtype=bool)
    counted = labels.map_blocks(annotated, ignore_label, dtype=bool)
    cell, total = da.compute(mask.sum(), counted.sum())
    return float(cell / total) if total else 0.0


@checked_stage
def weights(labels_path: str | os.PathLike, output: str | os.PathLike, *, w0: float, sigma: float,
            class_balance: Literal["balanced", "none"] | list[float], mode: Literal["2d", "3d"], tolerance: float,
            compression: dict[str, Any], ignore_label: int | None = None) -> dict[str, int]:
    """Write the weight map of the label image at `output` (float32, same chunks); returns slab counts.

    Work is chunked along z; in 3D each slab reads the z-halo that the cutoff
    distance needs, so the result equals the whole-volume computation.
    Finished slabs are recorded, so a killed run resumes.

    Args:
        w0: weight of the separation border term.
        sigma: its width, in pixels of the x axis.
        class_balance: 'balanced' (inverse class frequency), 'none', or [membrane, cell] weights.
        mode: '2d' (cells connected per section) or '3d' (connected in 3D, distances in voxel spacing).
        tolerance: border terms below `tolerance * w0` are dropped.
        compression: the config's `storage.compression` block.
        ignore_label: the label value of unannotated voxels: their weight is 0, they count in no class
            balance and are neither cell nor membrane for the distances; None: every voxel is annotated.
    """
    started = provenance.now()
    labels_array = ome_zarr.open_input(labels_path)
    check_ignore_label(ignore_label, labels_array.dtype, str(labels_path))
    labels = da.from_array(labels_array, chunks=labels_array.chunks, name=False)
    settings = {"w0": w0, "sigma": sigma, "class_balance": class_balance, "mode": mode, "tolerance": tolerance,
                **({"ignore_label": ignore_label} if ignore_label is not None else {})}
    inputs = {"labels": str(labels_path)}
    fingerprints = provenance.fingerprint_inputs(inputs)
    key = records.run_key(labels=fingerprints["labels"], compression=compression, **settings)
    voxel = ome_zarr.voxel_size(labels_path)[0]
    foreground = cell_fraction(labels, mode, ignore_label)
    if not 0 < foreground < 1:
        raise InputError(f"{labels_path}: the {'annotated ' if ignore_label is not None else ''}labels have "
                         f"{'no cell (all 0)' if foreground == 0 else 'no membrane (no 0, and no touching cells)'}"
                         "; training needs both classes")
    balance = class_weights(foreground, class_balance)

    create = functools.partial(ome_zarr.create_like, source=labels_path, dtype=np.float32, compression=compression,
                               name="weights")
    with records.resumable_image(output, key, create) as target:
        if target is None:
            return records.kept_complete(output, "weights")
        spacing = tuple(v / voxel[-1] for v in voxel)
        if mode == "2d":
            cells = labels.rechunk((labels_array.chunks[0], -1, -1)).map_blocks(
                lambda block: np.stack([separate_cells(without_ignored(section, ignore_label)) for section in block]),
                dtype=np.int64)
            weight = cells.map_blocks(weight_map, w0, sigma, balance, spacing, tolerance, True, dtype=np.float32)
        else:
            weight = _volume_weights(_Ignoring(labels_array, ignore_label), w0, sigma, balance, spacing, tolerance)
        if ignore_label is not None:  # unannotated: no weight
            weight = da.map_blocks(lambda w, labels: np.where(annotated(labels, ignore_label), w, 0).astype(w.dtype),
                                   weight, labels.rechunk(weight.chunks), dtype=np.float32)
        stats = records.store_slabs(weight, target, "weights")
        ome_zarr.set_attrs(target.partial, provenance=provenance.record(
            "weights", settings, inputs, started, fingerprints, class_weights=list(balance), slabs=stats))
    return stats


@dataclass(frozen=True)
class _Ignoring:
    """A label array read with its unannotated voxels made 0 (see `cells.without_ignored`)."""

    array: Any
    ignore_label: int | None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def chunks(self) -> tuple[int, ...]:
        return self.array.chunks

    def __getitem__(self, key: Any) -> np.ndarray:
        return without_ignored(np.asarray(self.array[key]), self.ignore_label)


def _volume_weights(labels: Any, w0: float, sigma: float, balance: tuple[float, float], spacing: tuple[float, ...],
                    tolerance: float) -> da.Array:
    """3D weights by slabs of whole sections, each computed with its z-halo of sections."""
    slab = labels.chunks[0]
    halo = int(cutoff_distance(sigma, tolerance) // spacing[0]) + 1
    cells_of = volume_cells(labels, slab)
    depth = labels.shape[0]

    def slab_weights(block_info: dict | None = None) -> np.ndarray:
        start, stop = block_info[None]["array-location"][0]
        first, last = max(start - halo, 0), min(stop + halo, depth)
        cells = cells_of.region(first, last)
        return weight_map(cells, w0, sigma, balance, spacing, tolerance, False)[start - first : stop - first]

    chunks = (tuple(min(slab, depth - s) for s in range(0, depth, slab)), (labels.shape[1],), (labels.shape[2],))
    return da.map_blocks(slab_weights, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))
