"""Training: random valid-size tiles from the Zarr arrays, weighted cross-entropy, checkpoint.

Labels are binary for the network: class 0 = membrane/background, class 1 = cell.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import augment, io, progress, provenance
from .cells import cell_mask
from .geometry import Box
from .mirror import read_mirrored
from .model import ModelConfig, UNet, save_checkpoint, select_device


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Pixel-wise softmax cross-entropy, each pixel scaled by its weight, averaged."""
    return (F.cross_entropy(logits, target, reduction="none") * weight).mean()


class TileSampler:
    """Random (input, target, weight) tiles of a 2D model from sections [first, last)."""

    def __init__(self, image: Any, labels: Any, weights: Any, sections: tuple[int, int], output_size: int,
                 halo: int, rng: np.random.Generator) -> None:
        depth = image.shape[0]
        first, last = sections
        if not 0 <= first < last <= depth:
            raise ValueError(f"training sections [{first}, {last}) do not fit a volume of {depth} sections")
        for name, array in (("labels", labels), ("weights", weights)):
            if array.shape != image.shape:
                raise io.InputError(f"{name} shape {array.shape} differs from the image's {image.shape}")
        self.image, self.labels, self.weights = image, labels, weights
        self.sections, self.output_size, self.halo, self.rng = (first, last), output_size, halo, rng

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        z = int(self.rng.integers(*self.sections))
        starts = [int(self.rng.integers(0, max(1, n - self.output_size + 1))) for n in self.image.shape[1:]]
        output = Box((z, *starts), (z + 1, *(s + self.output_size for s in starts)))
        tile_input = output.grow((0, self.halo, self.halo), (0, self.halo, self.halo))
        image = read_mirrored(self.image, tile_input)[0]
        target = _cell_target(read_mirrored(self.labels, output.grow((0, 1, 1), (0, 1, 1)))[0])
        weight = read_mirrored(self.weights, output)[0]
        return tuple(augment.random_dihedral([image, target, weight], self.rng))


def _cell_target(labels: np.ndarray) -> np.ndarray:
    """Class 1 where a cell is, 0 on membrane and where instances touch; the 1-pixel rim is context only."""
    return cell_mask(labels)[1:-1, 1:-1].astype(np.int64)


def train(norm_path: str | os.PathLike, labels_path: str | os.PathLike, weights_path: str | os.PathLike,
          checkpoint_path: str | os.PathLike, log_path: str | os.PathLike, model: dict[str, Any],
          iterations: int, tile: int, batch_size: int, optimizer: str, learning_rate: float, momentum: float,
          sections: list[int], seed: int, threads: int, device: str) -> None:
    """Train a 2D U-Net and write its checkpoint and a CSV log of the loss."""
    started = provenance.now()
    config = ModelConfig.from_dict(model)
    if config.ndim != 2:
        raise ValueError(f"training supports 2D models for now (model.ndim = {config.ndim})")
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    target_device = select_device(device)
    network = UNet(config).to(target_device)
    geometry = config.geometry
    output_size = geometry.smallest_output_at_least(tile)
    sampler = TileSampler(io.open_image(norm_path), io.open_image(labels_path), io.open_image(weights_path),
                          tuple(sections), output_size, geometry.halo, rng)
    opt = _optimizer(network, optimizer, learning_rate, momentum)
    rows = []
    clock = time.monotonic()
    for iteration in progress.track(range(1, iterations + 1), "train iterations"):
        batch = [sampler.sample() for _ in range(batch_size)]
        image, target, weight = (torch.from_numpy(np.stack(parts)).to(target_device) for parts in zip(*batch))
        logits = network(image[:, None])
        loss = weighted_cross_entropy(logits, target, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rows.append({"iteration": iteration, "loss": float(loss), "seconds": round(time.monotonic() - clock, 3)})
    Path(checkpoint_path).parent.mkdir(parents=True, exist_ok=True)
    _write_log(log_path, rows)
    settings = {"model": model, "iterations": iterations, "tile": tile, "batch_size": batch_size,
                "optimizer": optimizer, "learning_rate": learning_rate, "momentum": momentum,
                "sections": sections, "seed": seed}
    record = provenance.record("train", settings, {"norm": str(norm_path), "labels": str(labels_path),
                                                   "weights": str(weights_path)}, started)
    with io.atomic_output(checkpoint_path) as partial:
        save_checkpoint(partial, network, provenance=record, iteration=iterations)


def _optimizer(network: UNet, name: str, learning_rate: float, momentum: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(network.parameters(), lr=learning_rate, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(network.parameters(), lr=learning_rate)
    raise ValueError(f"unknown optimizer {name!r}: expected 'sgd' or 'adam'")


def _write_log(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    with io.atomic_output(path) as partial, open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["iteration", "loss", "seconds"])
        writer.writeheader()
        writer.writerows(rows)
