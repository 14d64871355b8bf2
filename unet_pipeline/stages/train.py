"""Training: the paper's recipe with checkpoints, validation and exact resume.

Weighted pixel-wise cross-entropy (plus an optional soft Dice term), SGD with
momentum 0.99 or Adam, a learning-rate schedule, random valid-size tiles
augmented in DataLoader workers. The training state (model, optimiser,
schedule, RNG, iteration, log) is saved every `checkpoint_every` iterations
to `<checkpoint folder>/state/`; a rerun with the same settings and inputs
continues from there and ends with the same weights as an uninterrupted run.
Class 0 = membrane/background, class 1 = cell.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from ..core import progress
from ..core.errors import ConfigError
from ..core.stage_settings import RUN_ONLY, checked_stage
from ..distributed import records
from ..nn.augment import AugmentSettings
from ..nn.checkpoint import load_weights, save_checkpoint, select_device, training_state
from ..nn.device_augment import finish_batch
from ..nn.inference import predict_in_memory
from ..nn.losses import soft_dice_loss, weighted_cross_entropy
from ..nn.model_config import ModelConfig
from ..nn.unet import UNet
from ..segmentation import metrics
from ..segmentation.cells import annotated, cell_mask, separate_cells, without_ignored
from ..segmentation.in_memory import segmentations
from ..segmentation.metrics import section_table
from ..segmentation.settings import Settings
from ..storage import ome_zarr, outputs, provenance
from ..training.tiles import TileSource, batches, check_source, training_volumes

LOG_FIELDS = ["iteration", "loss", "learning_rate", "seconds", "val_loss", "val_pixel_error", "val_rand_error"]


def schedule_factor(kind: str, iteration: int, iterations: int, step_size: int, gamma: float) -> float:
    """Learning-rate multiplier at `iteration` (0-based)."""
    if kind == "constant":
        return 1.0
    if kind == "step":
        return gamma ** (iteration // step_size)
    if kind == "cosine":
        return 0.5 * (1 + math.cos(math.pi * iteration / iterations))
    raise ConfigError(f"unknown train.schedule {kind!r}: expected constant, step or cosine")


HeldOut = list[tuple[str, Any, Any, Any, tuple[int, int], int | None]]  # see `validate`


def validate(network: UNet, volumes: HeldOut, tile: int, segmentation: Settings,
             voxel_size: Sequence[float]) -> dict:
    """Loss, pixel error and foreground-restricted Rand error on the annotated voxels of held-out sections of
    each validation volume (name, image, labels, weights, [first, last), ignore label), pooled over all of
    them (the Rand error of the cells `segmentation` makes of the probabilities: the lowest over its merge
    thresholds of the pooled tables); with several volumes, each one's figures too (suffixed by its name)."""
    network.eval()
    pooled = Validation()
    figures: dict[str, float] = {}
    for name, image, labels, weights, (first, last), ignore_label in volumes:
        probabilities = predict_in_memory(network, np.asarray(image[first:last], dtype=np.float32), tile)
        truth = np.asarray(labels[first:last])
        one = Validation.of(probabilities, without_ignored(truth, ignore_label), annotated(truth, ignore_label),
                            np.asarray(weights[first:last]), segmentation, voxel_size, pooled.sections)
        pooled.merge(one)
        if len(volumes) > 1:
            figures.update({f"{key}_{name}": value for key, value in one.figures().items()})
    network.train()
    return {**pooled.figures(), **figures}


@dataclass
class Validation:
    """Exactly poolable validation tallies: the weighted loss summed, pixels, mismatched pixels, and per merge
    threshold the contingency table of the segmentation against the true cells."""

    loss: float = 0.0
    pixels: int = 0
    mismatched: int = 0
    tables: list[metrics.Contingency] = field(default_factory=list)
    sections: int = 0  # sections tallied: the next volume's sections are numbered after them

    @classmethod
    def of(cls, probabilities: np.ndarray, truth: np.ndarray, counted: np.ndarray, weight: np.ndarray,
           segmentation: Settings, voxel_size: Sequence[float], first_section: int) -> "Validation":
        """The tallies of one volume's sections: `truth` its labels (unannotated voxels 0), `counted` where it is
        annotated."""
        true_cell = np.stack([cell_mask(s) for s in truth])
        picked = np.where(true_cell, probabilities[1], probabilities[0])
        cells = [separate_cells(section) for section in truth]  # unannotated: no cell, so outside the Rand
        tables = [_table(proposal, cells, first_section) for _, proposal in
                  segmentations(probabilities[1], segmentation, voxel_size, segmentation.merge_thresholds)]
        return cls(float(np.sum(-np.log(np.clip(picked, 1e-7, 1)) * weight)), int(np.count_nonzero(counted)),
                   int(np.count_nonzero(((probabilities[1] > 0.5) != true_cell) & counted)), tables, len(truth))

    def merge(self, other: "Validation") -> None:
        self.loss += other.loss
        self.pixels += other.pixels
        self.mismatched += other.mismatched
        self.tables = [a.merge(b) for a, b in zip(self.tables, other.tables)] if self.tables else other.tables
        self.sections += other.sections

    def figures(self) -> dict[str, float]:
        return {"val_loss": self.loss / self.pixels, "val_pixel_error": self.mismatched / self.pixels,
                "val_rand_error": min(metrics.rand_scores(table)["rand_error"] for table in self.tables)}


def _table(segmentation: np.ndarray, cells: list[np.ndarray], first_section: int) -> metrics.Contingency:
    """The contingency table of a (z, y, x) segmentation against each section's true cells, its sections
    numbered from `first_section` (so that the tables of several volumes pool)."""
    table = metrics.Contingency()
    for z, (proposal, truth) in enumerate(zip(segmentation, cells), start=first_section):
        table.merge(section_table(proposal, truth, z))
    return table


def validation_settings(segmentation: dict[str, Any]) -> Settings:
    """The segment settings of validation's segmentation (2D, face connectivity, the merge threshold chosen on
    the validation sections), from `train.validation_segmentation`."""
    return Settings.of(**segmentation, mode="2d", connectivity=None, merge_threshold="auto", tune_sections=None,
                       min_size=0)


@checked_stage
def train(checkpoint_path: str | os.PathLike, train_log_path: str | os.PathLike, *, model: dict[str, Any],
          training: list[dict[str, Any]], validation: list[dict[str, Any]],
          iterations: int, tile: int, batch_size: int, optimizer: Literal["adam", "sgd"], learning_rate: float,
          momentum: float, weight_decay: float, schedule: Literal["constant", "step", "cosine"], step_size: int,
          gamma: float, dice_weight: float,
          foreground_bias: float, augment: dict[str, Any], validate_every: int,
          validation_segmentation: dict[str, Any],
          checkpoint_every: int, loader_workers: int,
          seed: int, threads: int, device: Literal["auto", "cpu", "cuda"],
          amp: Literal["none", "bf16", "fp16"], init_from: str | None = None) -> None:
    """Train a U-Net; write the best (by validation Rand error, else the last) checkpoint and the log.

    Args:
        model: the config's `model` block (see `nn.model_config.ModelConfig`).
        training: the volumes tiles are drawn from, each a dict of volume (its name), image, intensity (its
            statistics from preprocess, which normalise every tile read; None: the image is normalised already),
            labels, weights (paths), sections ([first, last) or None: all), weight (its share of tiles,
            relative; None: by its voxels) and ignore_label (the label of unannotated voxels, or None); see
            `training.tiles.training_volumes`.
        validation: the volumes validated on, as `training` (weight unused); []: no validation.
        iterations: optimiser steps.
        tile: output tile side (rounded up to a valid U-Net output).
        batch_size: tiles per step.
        optimizer: 'adam' or 'sgd' (with `momentum`, as the paper).
        learning_rate, momentum, weight_decay: the optimiser's.
        schedule: 'constant', 'step' (times `gamma` every `step_size` steps) or 'cosine'.
        step_size, gamma: the step schedule's.
        dice_weight: weight of a soft Dice loss of the cell class added to the weighted cross-entropy.
        foreground_bias: probability of redrawing a tile that lacks either cells or membrane (up to 10 draws).
        augment: the config's `train.augment` block (see `nn.augment.AugmentSettings`).
        validate_every, checkpoint_every: steps between validations and between saved states.
        validation_segmentation: how validation makes cells for its Rand error: the config's
            `train.validation_segmentation` block (method 'components', 'watershed' or 'agglomerate').
        loader_workers: data loader processes (0: in this process).
        seed: seeds tiles, augmentation and initial weights.
        threads: torch threads.
        device: 'auto' (CUDA when there is one), 'cpu' or 'cuda'.
        amp: autocast on CUDA: 'none', 'bf16' or 'fp16'.
        init_from: fine-tune: a checkpoint of the same architecture whose weights the run starts from (with
            a fresh optimiser and schedule); None: weights initialised from `seed`.
    """
    with outputs.output_lock(checkpoint_path):
        started = provenance.now()
        settings = {key: value for key, value in locals().items() if key not in
                    ("checkpoint_path", "train_log_path", "started")}
        config = ModelConfig.from_dict(model)
        geometry = config.geometry
        output_size = geometry.smallest_output_at_least(tile)
        volumes = training_volumes(training, "training")
        validated = training_volumes(validation, "validation")
        source = TileSource(volumes, geometry, output_size, batch_size, foreground_bias, AugmentSettings(**augment),
                            seed)
        check_source(source)
        segmentation = validation_settings(validation_segmentation) if validated else None
        torch.set_num_threads(threads)
        state_dir = training_state(checkpoint_path)
        shaping = {key: value for key, value in settings.items() if key not in RUN_ONLY["train"]}
        inputs = {f"{kind}:{entry['volume']}": entry.get(kind) for entry in (*training, *validation)
                  for kind in ("image", "intensity", "labels", "weights")}
        if init_from:
            inputs["init_from"] = str(init_from)
        fingerprints = provenance.fingerprint_inputs(inputs)
        key = records.run_key(settings=shaping, **fingerprints)
        run = build(config, select_device(device), seed, optimizer, learning_rate, momentum, weight_decay, schedule,
                    iterations, step_size, gamma, amp, warp_margin=source.device_margin)
        started_from = {"path": str(init_from), "weights_sha256": load_weights(run.network, init_from,
                                                                             "train.init_from")} if init_from else None
        restore(run, state_dir, key)
        held_out = [(v.name, *v.arrays(ome_zarr.open_input), v.sections, v.ignore_label) for v in validated]
        tiles = batches(source, run.start, iterations, loader_workers, pinned=run.device.type == "cuda")
        loop(run, tiles, held_out, state_dir, key, iterations=iterations, dice_weight=dice_weight,
             validate_every=validate_every, checkpoint_every=checkpoint_every, validation_tile=max(tile, 128),
             segmentation=segmentation, voxel_size=ome_zarr.voxel_size(volumes[0].image)[0])
        rows, best, target_device, network = run.rows, run.best, run.device, run.network
        final = state_dir / ("best.pt" if validated and best["iteration"] else "last.pt")
        record = provenance.record("train", settings, inputs, started, fingerprints, best=best,
                                   init_from=started_from)
        network.load_state_dict(torch.load(final, map_location=target_device, weights_only=True)["state_dict"])
        _write_log(train_log_path, rows)
        with outputs.atomic_output(checkpoint_path) as partial:
            save_checkpoint(partial, network, provenance=record, iteration=iterations, best=best)


@dataclass
class Run:
    """A training run in memory: the network, its optimiser, schedule and scaler, and where it stands."""

    network: UNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: str
    warp_margin: int | None = None  # with the elastic deformation on the device: the halo to crop after it
    memory_format: torch.memory_format | None = None  # of the network and its inputs (see `fast_layout`)
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"val_rand_error": math.inf, "iteration": 0})
    start: int = 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision as asked (`amp`), on CUDA only."""
        if self.amp == "none" or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    def on_device(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """A loader's batch as (image, target, weight) on the run's device, deformed there when the loader
        left that to it (see `device_augment`); the image channels-last on CUDA."""
        moved = [part.to(self.device, non_blocking=True) for part in batch]
        image, target, weight = moved if self.warp_margin is None else finish_batch(*moved, self.warp_margin)
        if self.memory_format is not None:
            image = image.contiguous(memory_format=self.memory_format)
        return image, target, weight

    def step(self, image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
             dice_weight: float) -> torch.Tensor:
        """One optimiser step on a batch on the device; returns the loss, detached (no device sync)."""
        with self.autocast():
            logits = self.network(image).float()
            loss = weighted_cross_entropy(logits, target, weight)
            if dice_weight:
                loss = loss + dice_weight * soft_dice_loss(logits, target, weight)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()


def build(config: ModelConfig, device: torch.device, seed: int, optimizer: str, learning_rate: float,
          momentum: float, weight_decay: float, schedule: str, iterations: int, step_size: int, gamma: float,
          amp: str, warp_margin: int | None = None) -> Run:
    """A fresh run: the network initialised from `seed` on `device`, its optimiser, schedule and scaler.

    On CUDA the network is channels-last and cuDNN picks the fastest algorithms (autotuning: a CUDA run
    is then not bit-reproducible, a CPU run is).
    """
    torch.manual_seed(seed)
    network = UNet(config).to(device)
    layout = fast_layout(device, config.ndim)
    if layout is not None:
        network = network.to(memory_format=layout)
        torch.backends.cudnn.benchmark = True
    opt = (torch.optim.SGD(network.parameters(), lr=learning_rate, momentum=momentum, weight_decay=weight_decay)
           if optimizer == "sgd" else
           torch.optim.Adam(network.parameters(), lr=learning_rate, weight_decay=weight_decay))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: schedule_factor(schedule, i, iterations, step_size, gamma))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16" and device.type == "cuda")
    return Run(network, opt, scheduler, scaler, device, amp, warp_margin, layout)


def fast_layout(device: torch.device, ndim: int) -> torch.memory_format | None:
    """The memory format cuDNN convolves fastest on CUDA (channels-last; its 3D form for a 3D model), or None
    (the default layout) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.channels_last if ndim == 2 else torch.channels_last_3d


def restore(run: Run, state_dir: Path, key: str) -> None:
    """Continue `run` from the state an earlier run of the same key saved, if there is one."""
    state = _load_state(state_dir, key)
    if not state:
        return
    run.network.load_state_dict(state["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    run.rows, run.best, run.start = state["rows"], state["best"], state["iteration"]
    print(f"train: resuming at iteration {run.start} from {state_dir}", flush=True)


def loop(run: Run, tiles: Any, held_out: HeldOut, state_dir: Path, key: str, *, iterations: int, dice_weight: float,
         validate_every: int, checkpoint_every: int, validation_tile: int, segmentation: Settings | None,
         voxel_size: Sequence[float]) -> None:
    """Train `run` from its start to `iterations` on `tiles` (batches of image, target, weight), validating on
    `held_out` (see `validate`) and saving its state (keyed by `key`) as it goes. Losses stay on the device
    until a validation or a saved state needs them, so a CUDA run never waits for the device after each step."""
    network = run.network
    clock = time.monotonic() - (run.rows[-1]["seconds"] if run.rows else 0.0)
    meter = progress.Meter("train iterations", iterations)
    meter.done = run.start
    network.train()
    for iteration, batch in enumerate(tiles, start=run.start + 1):
        loss = run.step(*run.on_device(batch), dice_weight)
        row = {"iteration": iteration, "loss": loss, "learning_rate": run.scheduler.get_last_lr()[0],
               "seconds": round(time.monotonic() - clock, 3)}
        run.scheduler.step()
        run.rows.append(row)
        if segmentation and (iteration % validate_every == 0 or iteration == iterations):
            _settle_losses(run.rows)
            row.update(validate(network, held_out, validation_tile, segmentation, voxel_size))
            if row["val_rand_error"] < run.best["val_rand_error"]:
                run.best = {"val_rand_error": row["val_rand_error"], "iteration": iteration}
                _save(state_dir / "best.pt", network, iteration=iteration)
            print(f"train: iteration {iteration} validation {row}", flush=True)
        meter.advance()
        if iteration % checkpoint_every == 0 or iteration == iterations:
            _settle_losses(run.rows)
            _save(state_dir / "last.pt", network, run_key=key, iteration=iteration,
                  optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict(),
                  scaler=run.scaler.state_dict(), torch_rng=torch.get_rng_state(), rows=run.rows, best=run.best)


def _settle_losses(rows: list[dict[str, Any]]) -> None:
    """Turn the losses still held as device tensors, at the end of `rows`, into floats."""
    for row in reversed(rows):
        if isinstance(row["loss"], float):
            return
        row["loss"] = float(row["loss"])


def _load_state(state_dir: Path, key: str) -> dict[str, Any] | None:
    """The saved state of the same run (same key), or None; a state of another run is discarded."""
    last = state_dir / "last.pt"
    if last.exists():
        try:
            state = torch.load(last, map_location="cpu", weights_only=False)
        except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as err:  # truncated or damaged
            print(f"train: {last} cannot be read ({err}); starting afresh", flush=True)
            state = {}
        if state.get("run_key") == key:
            return state
        if state:
            print(f"train: {last} belongs to other settings or inputs; starting afresh", flush=True)
    outputs.remove(state_dir)
    state_dir.mkdir(parents=True)
    return None


def _save(path: Path, network: UNet, **extra: Any) -> None:
    with outputs.atomic_output(path) as partial:
        torch.save({"model_config": asdict(network.config), "state_dict": network.state_dict(), **extra}, partial)


def _write_log(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    with outputs.atomic_output(path) as partial, open(partial, "w", newline="") as handle:
        per_volume = sorted({key for row in rows for key in row} - set(LOG_FIELDS))  # with several volumes
        writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS + per_volume)
        writer.writeheader()
        writer.writerows(rows)
