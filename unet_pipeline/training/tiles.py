"""Training batches: random valid-size tiles from the Zarr arrays, augmented in DataLoader workers.

Each batch is a pure function of (seed, iteration): its random generator is
seeded with both. So the data do not depend on how many workers load them,
and a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..core.errors import ConfigError, InputError
from ..core.geometry import Box, UNetGeometry
from ..core.intensity import normalised
from ..nn.augment import AugmentSettings, augment_tile, augment_unwarped
from ..nn.mirror import read_mirrored
from ..segmentation.cells import cell_mask, without_ignored
from ..storage import intensity_stats, ome_zarr


@dataclass(frozen=True)
class TrainingVolume:
    """One annotated volume tiles are drawn from: its image (with the intensity range that normalises it),
    labels and weight map, the sections drawn from, and the share of tiles it gives."""

    name: str
    image: str
    labels: str
    weights: str
    sections: tuple[int, int]
    share: float = 1.0
    ignore_label: int | None = None  # the label of unannotated voxels (their weight is 0)
    intensity: tuple[float, float] | None = None  # (low, high) of preprocess; None: the image is normalised

    @property
    def paths(self) -> tuple[str, str, str]:
        return self.image, self.labels, self.weights

    def arrays(self, open_array: Callable[[str], Any]) -> tuple[Any, Any, Any]:
        """Its image (normalised as it is read), labels and weights, each opened by `open_array`."""
        image, labels, weights = (open_array(path) for path in self.paths)
        return normalised(image, self.intensity), labels, weights


def training_volumes(entries: list[dict[str, Any]], what: str) -> tuple[TrainingVolume, ...]:
    """The volumes of `entries` (dicts with volume, image, intensity, labels, weights, sections, weight and
    ignore_label, as the workflow passes them), their arrays checked to agree and their sections resolved
    (None: all) and checked to fit; shares: each entry's weight, or by default its share of all the entries'
    voxels, normalised."""
    found, voxels = [], []
    for index, entry in enumerate(entries):
        image = ome_zarr.open_image(entry["image"])
        for name in ("labels", "weights"):
            shape = ome_zarr.open_image(entry[name]).shape
            if shape != image.shape:
                raise InputError(f"{entry[name]}: {name} of volume {entry['volume']!r} have shape {shape}, its "
                                 f"image {entry['image']} has {image.shape}")
        first, last = entry["sections"] or (0, image.shape[0])
        if not 0 <= first < last <= image.shape[0]:
            raise ConfigError(f"{what}[{index}].sections [{first}, {last}) do not fit volume {entry['volume']!r} "
                              f"({entry['image']}: {image.shape[0]} sections)")
        found.append(TrainingVolume(entry["volume"], entry["image"], entry["labels"], entry["weights"],
                                    (first, last), ignore_label=entry.get("ignore_label"),
                                    intensity=intensity_stats.intensity_range(entry.get("intensity"))))
        voxels.append((last - first) * math.prod(image.shape[1:]))
    fractions = [count / sum(voxels) for count in voxels]
    weights = [entry.get("weight") or fraction for entry, fraction in zip(entries, fractions)]
    return tuple(dataclasses.replace(volume, share=weight / sum(weights)) for volume, weight in zip(found, weights))


@dataclass(frozen=True)
class TileSource:
    """Where tiles come from and how big they are."""

    volumes: tuple[TrainingVolume, ...]
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


def check_source(source: TileSource) -> None:
    """Refuse training volumes too thin for a 3D tile."""
    for volume in source.volumes:
        first, last = volume.sections
        if source.geometry.ndim == 3 and last - first < source.output_size:
            raise ConfigError(f"a 3D tile needs {source.output_size} training sections, volume {volume.name!r} "
                              f"gives {last - first}")


def _sample_tiles(arrays: tuple, source: TileSource,
                   rng: np.random.Generator) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, np.ndarray]:
    """A random input region of the training sections of a volume drawn by share (with `foreground_bias`,
    retried up to 10 times until its output holds both classes): the output inside it, and its image
    (float32), labels and weights (float32). With one volume no draw picks it, so the tiles are those of a
    single-volume source."""
    index = 0 if len(source.volumes) == 1 else int(rng.choice(len(source.volumes),
                                                               p=[v.share for v in source.volumes]))
    image, labels, weights = arrays[index]
    ndim, out, halo = source.geometry.ndim, source.output_size, source.geometry.halo
    first, last = source.volumes[index].sections
    ignore_label = source.volumes[index].ignore_label
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
        labels_tile = without_ignored(read_mirrored(labels, box), ignore_label)
        weights_tile = read_mirrored(weights, box)
        inner = Box(grow, output.shape + grow).slices()
        seen = labels_tile[inner][weights_tile[inner] > 0]  # the annotated output pixels: weight 0 marks the rest
        both_classes = 0 < np.count_nonzero(seen) < seen.size
        if both_classes or rng.random() >= source.foreground_bias or attempt == 9:
            break
    return inner, read_mirrored(image, box).astype(np.float32), labels_tile, weights_tile.astype(np.float32)


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
        arrays = tuple(volume.arrays(ome_zarr.open_checked) for volume in source.volumes)
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
