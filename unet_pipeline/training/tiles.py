"""Training batches: random valid-size tiles from the Zarr arrays, augmented in DataLoader workers.

Each batch is a pure function of (seed, iteration): its random generator is
seeded with both. So the data do not depend on how many workers load them,
and a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..core.errors import ConfigError, InputError
from ..core.geometry import Box, UNetGeometry
from ..nn.augment import AugmentSettings, augment_tile, augment_unwarped
from ..nn.mirror import read_mirrored
from ..segmentation.cells import cell_mask
from ..storage import ome_zarr


@dataclass(frozen=True)
class TileSource:
    """Where tiles come from and how big they are."""

    image: str
    labels: str
    weights: str
    sections: tuple[int, int]
    geometry: UNetGeometry
    output_size: int  # the network's output edge (a valid size)
    batch_size: int
    foreground_bias: float
    augment: AugmentSettings
    seed: int

    @property
    def device_margin(self) -> int | None:
        """What the training device crops after deforming (see `device_augment`), or None when the loader
        deforms the tiles itself."""
        return self.geometry.halo if self.augment.elastic_on == "device" else None


def check_source(source: TileSource) -> tuple[int, ...]:
    """The volume shape, after checking the arrays agree and the sections fit."""
    image = ome_zarr.open_image(source.image)
    for name, path in (("labels", source.labels), ("weights", source.weights)):
        shape = ome_zarr.open_image(path).shape
        if shape != image.shape:
            raise InputError(f"{path}: {name} shape {shape} differs from the image's {image.shape}")
    first, last = source.sections
    if not 0 <= first < last <= image.shape[0]:
        raise ConfigError(f"train.sections [{first}, {last}) do not fit a volume of {image.shape[0]} sections")
    if source.geometry.ndim == 3 and last - first < source.output_size:
        raise ConfigError(f"a 3D tile needs {source.output_size} training sections, train.sections has {last - first}")
    return image.shape


def _sample_tiles(arrays: tuple, source: TileSource,
                   rng: np.random.Generator) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, np.ndarray]:
    """A random input region of the training sections (with `foreground_bias`, retried up to 10 times until
    its output holds both classes): the output inside it, and its image (float32), labels and weights
    (float32)."""
    image, labels, weights = arrays
    ndim, out, halo = source.geometry.ndim, source.output_size, source.geometry.halo
    first, last = source.sections
    for attempt in range(10):
        if ndim == 2:
            z = int(rng.integers(first, last))
            starts = [z] + [int(rng.integers(0, max(1, n - out + 1))) for n in labels.shape[1:]]
            output = Box(tuple(starts), (z + 1, *(s + out for s in starts[1:])))
        else:
            starts = [int(rng.integers(first, max(first + 1, last - out + 1)))]
            starts += [int(rng.integers(0, max(1, n - out + 1))) for n in labels.shape[1:]]
            output = Box(tuple(starts), tuple(s + out for s in starts))
        grow = (0 if ndim == 2 else halo, halo, halo)
        box = output.grow(grow, grow)
        labels_tile = read_mirrored(labels, box)
        inner = Box(grow, output.shape + grow).slices()
        both_classes = 0 < np.count_nonzero(labels_tile[inner]) < labels_tile[inner].size
        if both_classes or rng.random() >= source.foreground_bias or attempt == 9:
            break
    return (inner, read_mirrored(image, box).astype(np.float32), labels_tile,
            read_mirrored(weights, box).astype(np.float32))


def sample_tile(arrays: tuple, source: TileSource, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """One augmented (input image, target class, weight) tile; targets and weights cropped to the output."""
    inner, *tiles = _sample_tiles(arrays, source, rng)
    image_tile, labels_tile, weights_tile = augment_tile(*tiles, source.augment, rng)
    target = cell_mask(labels_tile)[inner].astype(np.int64)  # touching instances split, as in the weights
    return image_tile, target, weights_tile[inner]


def sample_unwarped_tile(arrays: tuple, source: TileSource, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """For `elastic_on: device`: one (input image, labels, weights, deformation field) tile, all input-sized
    and not deformed, the labels numbered 1..n (see `device_augment.finish_batch`, which makes the rest on
    the device)."""
    _, *tiles = _sample_tiles(arrays, source, rng)
    image_tile, labels_tile, weights_tile, field = augment_unwarped(*tiles, source.augment, rng)
    small = np.unique(np.concatenate([[0], labels_tile.ravel()]), return_inverse=True)[1][1:]  # float-exact
    return image_tile, small.reshape(labels_tile.shape).astype(np.int32), weights_tile, field.astype(np.float32)


class TileBatches(IterableDataset):
    """Batches for iterations [start, stop); DataLoader worker w makes every w-th one."""

    def __init__(self, source: TileSource, start: int, stop: int) -> None:
        self.source, self.start, self.stop = source, start, stop

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        source = self.source
        arrays = tuple(ome_zarr.open_checked(path) for path in (source.image, source.labels, source.weights))
        sample = sample_unwarped_tile if source.augment.elastic_on == "device" else sample_tile
        for iteration in range(self.start + worker, self.stop, workers):
            rng = np.random.default_rng([source.seed, iteration])
            tiles = [sample(arrays, source, rng) for _ in range(source.batch_size)]
            image, target, weight, *field = (np.stack(parts) for parts in zip(*tiles))  # target: labels (device)
            if source.geometry.ndim == 2:  # (batch, 1, y, x) tiles: drop the section axis
                image, target, weight = image[:, 0], target[:, 0], weight[:, 0]
            yield torch.from_numpy(image)[:, None], torch.from_numpy(target), torch.from_numpy(weight), \
                *map(torch.from_numpy, field)


def batches(source: TileSource, start: int, stop: int, workers: int, pinned: bool = False) -> DataLoader:
    """Batches of iterations [start, stop) in order, made by `workers` processes (0: in this one); in
    page-locked memory when `pinned` (for fast, asynchronous copies to a CUDA device)."""
    return DataLoader(TileBatches(source, start, stop), batch_size=None, num_workers=workers,
                      persistent_workers=False, prefetch_factor=4 if workers else None, pin_memory=pinned,
                      generator=torch.Generator().manual_seed(source.seed))  # leaves the global RNG alone
