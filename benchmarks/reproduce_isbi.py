"""Reproduce the U-Net paper's ISBI 2012 result with one command on one GPU, and measure the run.

Runs the workflow with `config/isbi2012-paper.yaml` (the paper's network,
weight map and elastic deformation; bf16 autocast, channels-last, cuDNN
autotuning): ingest, normalise, weight map, train on sections 0-15, predict
with test-time augmentation, segment, evaluate on the held-out sections with
this project's metrics. Then it measures, on the same inputs, the data
loader's samples per second and the training step alone on a batch already
on the device, whose ratio to the training loop is the device's share of the
time. Writes `<output>/reproduction.json` (figures, paths of the checkpoint
and metrics) and prints a table.

    python benchmarks/reproduce_isbi.py                      # on a CUDA GPU, with the ISBI data
    python benchmarks/reproduce_isbi.py --smoke              # the same code on CPU in about a minute:
                                                             # the demo's synthetic volume, a tiny network
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch
from chain import REPO, results, run_workflow, write_config
from train import bare_rate, loader_rate

PAPER = {"rand_error": 0.0382, "pixel_error": 0.0611, "warping_error": 0.000353}  # Ronneberger et al. 2015, Table 1
SMOKE = {  # the demo config, shrunk to about a minute on 2 CPU cores
    "name": "reproduce-smoke",
    "model": {"depth": 2, "base_features": 8},
    "train": {"iterations": 60, "tile": 60, "batch_size": 4, "validate_every": 30, "checkpoint_every": 30,
              "device": "cpu", "amp": "none", "learning_rate": 0.002,
              "augment": {"elastic_on": "device"}},  # as the GPU run: grid_sample, here on the CPU
    "predict": {"tta": True, "device": "cpu"},
    "evaluate": {"warping": True},
}
FIGURES = ["pixel_error", "rand_error", "rand_error_thinned", "info_error", "warping_error"]


def held_out_figures(metrics: dict[str, Any]) -> dict[str, float]:
    """The paper's table's errors, and this project's others, from `metrics.json`'s model scores."""
    model = metrics["model"]
    return {"pixel_error": model["pixel_error"], "rand_error": model["rand_error"],
            "rand_error_thinned": 1 - model["v_rand_thinned"], "info_error": model["info_error"],
            "warping_error": model["warping_error"]}


def training_log(path: Path) -> list[dict[str, float]]:
    with open(path) as handle:
        return [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(handle)]


def loss_fell(rows: list[dict[str, float]]) -> bool:
    """Whether the mean loss of the last tenth of the iterations is below that of the first tenth."""
    tenth = max(1, len(rows) // 10)
    first, last = (sum(row["loss"] for row in part) / tenth for part in (rows[:tenth], rows[-tenth:]))
    return last < first


def device_name(config: dict[str, Any]) -> str:
    if config["train"]["device"] == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, synthetic volume, tiny network (CI)")
    parser.add_argument("--output", type=Path, default=REPO / "results" / "reproduce_isbi")
    parser.add_argument("--cores", type=int, default=None, help="Snakemake cores (default: all)")
    args = parser.parse_args()
    base = REPO / "config" / ("config.yaml" if args.smoke else "isbi2012-paper.yaml")
    config = write_config(base, args.output.resolve(), SMOKE if args.smoke else {})
    if config["train"]["device"] == "cuda" and not torch.cuda.is_available():
        sys.exit("reproduce_isbi: no CUDA device here; the reproduction needs one (--smoke runs on the CPU)")
    out = results(config)
    held_out = config["evaluation"][0]  # the held-out sections of the training volume
    metrics_path = out / "volumes" / held_out["volume"] / "metrics.json"
    workflow_s = run_workflow(args.output.resolve(), [metrics_path], args.cores or os.cpu_count() or 1)
    rows = training_log(out / "model" / "train_log.csv")
    train_s = rows[-1]["seconds"]
    loop_rate = (len(rows) - 1) / (rows[-1]["seconds"] - rows[0]["seconds"])
    step_rate = bare_rate(config, 10 if args.smoke else 50)
    loader = loader_rate(config, 10 if args.smoke else 100)
    metrics = json.loads(metrics_path.read_text())
    figures = {
        "device": device_name(config),
        "config": str(base.relative_to(REPO)) + (" with the smoke changes" if args.smoke else ""),
        "iterations": len(rows),
        "batch_size": config["train"]["batch_size"],
        "train_wall_s": train_s,
        "workflow_wall_s": round(workflow_s, 1),
        "iterations_per_s": loop_rate,
        "loader_samples_per_s": loader,
        "loop_samples_per_s": loop_rate * config["train"]["batch_size"],
        "device_share": loop_rate / step_rate,
        "loss_first": rows[0]["loss"],
        "loss_last": rows[-1]["loss"],
        "loss_fell": loss_fell(rows),
        "held_out_sections": held_out.get("sections"),
        "held_out": held_out_figures(metrics),
        "paper": PAPER,
        "checkpoint": str(out / "model" / "checkpoint.pt"),
        "metrics": str(metrics_path),
    }
    (args.output / "reproduction.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"[reproduce_isbi] {figures['config']} on {figures['device']}")
    print(f"  training: {len(rows)} iterations of {figures['batch_size']} tiles in {train_s:.0f} s; "
          f"{loop_rate:.2f} it/s; loss {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}")
    print(f"  data loader alone: {loader:.1f} samples/s against {figures['loop_samples_per_s']:.1f} consumed "
          f"({loader / figures['loop_samples_per_s']:.2f}x)")
    print(f"  device share of the loop's time (loop rate / step alone): {figures['device_share']:.2f}")
    print(f"  held-out sections {figures['held_out_sections']} of {held_out['volume']}:  " + ", ".join(
        f"{name} {value:.4f}" + (f" (paper {PAPER[name]})" if name in PAPER else "")
        for name, value in figures["held_out"].items()))
    print(f"  written: {args.output / 'reproduction.json'}")


if __name__ == "__main__":
    main()
