"""The ISBI reproduction command, in its smoke mode: the same code as on a GPU, on the CPU in about a minute."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import torch
from conftest import REPO

from unet_pipeline.nn.checkpoint import load_model


def test_smoke_reproduction_trains_and_writes_every_figure(tmp_path):
    script = REPO / "benchmarks" / "reproduce_isbi.py"
    done = subprocess.run([sys.executable, str(script), "--smoke", "--output", str(tmp_path), "--cores", "2"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "reproduction.json").read_text())
    assert figures["loss_fell"] and figures["loss_last"] < figures["loss_first"]
    assert set(figures["held_out"]) == {"pixel_error", "rand_error", "rand_error_thinned", "info_error",
                                        "warping_error"}
    assert all(0 <= value <= 1 for value in figures["held_out"].values())
    for key in ("train_wall_s", "iterations_per_s", "loader_samples_per_s", "device_share"):
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    assert figures["iterations"] == 60 and "CPU" in figures["device"]
    assert load_model(figures["checkpoint"], torch.device("cpu")).config.base_features == 8
    metrics = json.loads(open(figures["metrics"]).read())
    assert metrics["model"]["rand_error"] == figures["held_out"]["rand_error"]
    assert "[reproduce_isbi]" in done.stdout and "held-out sections" in done.stdout
