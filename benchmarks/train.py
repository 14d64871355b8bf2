"""Benchmark of the training loop against its own bound, both measured in the same run.

1. Loop efficiency: iterations per second of the `train` stage (tiles drawn,
   augmented and weighted by its data loader, the loss logged, validation and
   checkpoints as configured) divided by those of a bare forward + backward +
   optimiser step of the same network, with the same batch size and threads,
   on one batch already in memory. Goal >= 0.8: everything around the step
   costs at most a fifth.
2. Loader headroom: samples per second the stage's data loader makes on its
   own (same workers, same augmentation), divided by the samples per second
   the bare step consumes. Goal >= 1.2: the loop never waits for tiles.

The inputs (normalised image, labels, weight map) are made by the workflow
itself (`snakemake` up to the weights) from the chosen config, in a
temporary results folder.

    python benchmarks/train.py                                   # the demo config, synthetic volume
    python benchmarks/train.py --config config/isbi2012.yaml     # the ISBI recipe (needs the ISBI data)
    python benchmarks/train.py --quick                           # fewer iterations, for a smoke run
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from chain import REPO, run_workflow, write_config

from unet_pipeline.nn.augment import AugmentSettings
from unet_pipeline.nn.checkpoint import select_device
from unet_pipeline.nn.model_config import ModelConfig
from unet_pipeline.stages.train import build
from unet_pipeline.stages.train import train as train_stage
from unet_pipeline.training.tiles import TileSource, batches, training_volumes
from unet_pipeline.workflow.stage_config import TRAINING_ARRAYS, architecture, run_settings, stage_settings


def prepare(config_file: Path, folder: Path) -> dict[str, Any]:
    """The config (with the schema's defaults), after the workflow made the train stage's inputs."""
    config = write_config(config_file, folder)
    train = stage_settings(config, "train")
    run_workflow(folder, sorted({entry[name] for entry in train["training"] + train["validation"]
                                 for name in TRAINING_ARRAYS}), cores=2)
    return config


def stage_rate(config: dict[str, Any], folder: Path, iterations: int) -> tuple[float, float]:
    """(iterations per second of the stage's loop, from its own log after the first iteration; wall seconds of
    the whole stage call)."""
    settings = {**stage_settings(config, "train"), **run_settings(config, "train"), "iterations": iterations}
    start = time.perf_counter()
    train_stage(folder / "model" / "checkpoint.pt", folder / "model" / "log.csv", **settings)
    wall = time.perf_counter() - start
    with open(folder / "model" / "log.csv") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
    return (len(seconds) - 1) / (seconds[-1] - seconds[0]), wall


def tile_source(config: dict[str, Any]) -> TileSource:
    """The train stage's tiles for `config`: its training volumes, tile size, batch and augmentation."""
    train = config["train"]
    geometry = ModelConfig.from_dict(architecture(config)).geometry
    return TileSource(training_volumes(stage_settings(config, "train")["training"], "training"), geometry,
                      geometry.smallest_output_at_least(train["tile"]), train["batch_size"],
                      train["foreground_bias"], AugmentSettings(**train["augment"]), train["seed"])


def bare_rate(config: dict[str, Any], iterations: int) -> float:
    """Iterations per second of the stage's own step (forward, weighted loss, backward, optimiser; with its
    device, precision and memory format) on one batch already on the device."""
    train = config["train"]
    source = tile_source(config)
    torch.set_num_threads(train["threads"])
    run = build(ModelConfig.from_dict(architecture(config)), select_device(train["device"]), train["seed"],
                train["optimizer"], train["learning_rate"], train["momentum"], train["weight_decay"], "constant",
                iterations, train["step_size"], train["gamma"], train["amp"], warp_margin=source.device_margin)
    batch = run.on_device(next(iter(batches(source, 0, 1, 0))))
    run.network.train()
    run.step(*batch, train["dice_weight"])  # warm-up (and cuDNN's autotuning)
    synchronize(run.device)
    start = time.perf_counter()
    for _ in range(iterations):
        run.step(*batch, train["dice_weight"])
    synchronize(run.device)
    return iterations / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(config: dict[str, Any], iterations: int) -> float:
    """Samples per second of the stage's data loader alone (its worker processes started before the clock)."""
    train = config["train"]
    loader = iter(batches(tile_source(config), 0, iterations + 1, train["loader_workers"]))
    next(loader)  # workers up
    start = time.perf_counter()
    count = sum(1 for _ in loader)
    return count * train["batch_size"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--iterations", type=int, default=None, help="default: 200 (20 with --quick)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    iterations = args.iterations or (20 if args.quick else 200)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = prepare(args.config, folder)
        train = config["train"]
        # interleaved, each measured twice and the best kept: this machine's speed drifts
        bare, loader, stage, walls = [], [], [], []
        for repeat in range(2):
            bare.append(bare_rate(config, max(5, iterations // 4)))
            loader.append(loader_rate(config, iterations))
            rate, wall = stage_rate(config, folder / f"run{repeat}", iterations)
            stage.append(rate)
            walls.append(wall)
    samples_bare = max(bare) * train["batch_size"]
    print(f"[train] {args.config.name}: model depth {config['model']['depth']}, {config['model']['base_features']} "
          f"features, tile {train['tile']}, batch {train['batch_size']}, {train['threads']} threads, "
          f"{train['loader_workers']} loader workers, validation every {train['validate_every']} on "
          f"{config['validation']}, {iterations} iterations, best of 2")
    print(f"  bare step (batch in memory): {max(bare):.2f} it/s; runs {', '.join(f'{r:.2f}' for r in bare)}")
    print(f"  train stage loop:            {max(stage):.2f} it/s; runs {', '.join(f'{r:.2f}' for r in stage)} "
          f"(whole calls {', '.join(f'{w:.1f}' for w in walls)} s)")
    print(f"  ratio stage / bare step: {max(stage) / max(bare):.3f}  (goal >= 0.8)")
    print(f"  data loader alone: {max(loader):.1f} samples/s; the bare step consumes {samples_bare:.1f} samples/s")
    print(f"  ratio loader / consumption: {max(loader) / samples_bare:.3f}  (goal >= 1.2)")


if __name__ == "__main__":
    main()
