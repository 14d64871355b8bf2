"""Killed at a durable step, a stage's rerun finishes with no manual step and writes exactly what an uninterrupted
run writes (see `storage.crash_points`)."""

from __future__ import annotations

import os
import subprocess

import numpy as np
from conftest import probability_image, segment_settings
from test_resume import chunk_files, stage_command
from test_segment import cells_probability

from unet_pipeline.storage import crash_points, outputs


def run_stage(command: list[str], log, crash_at: int | None = None) -> int:
    """Run a stage in its own process group, logging its durable steps to `log` (and killed at step `crash_at`);
    its exit status."""
    env = {**os.environ, crash_points.LOG_ENV: str(log)}
    if crash_at is not None:
        env[crash_points.AT_ENV] = str(crash_at)
    return subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          start_new_session=True, timeout=300).returncode


def segment_case(tmp_path):
    probability = probability_image(tmp_path / "p.ome.zarr", cells_probability((2, 64, 64), 6), (1, 32, 32),
                                    np.float16)
    settings = segment_settings({"kind": "local", "workers": 1, "threads_per_worker": 1},
                                block=[1, 32, 32], context=[0, 32, 32])
    return probability, settings


def test_the_crash_log_numbers_every_durable_step_of_a_run_in_order(tmp_path):
    probability, settings = segment_case(tmp_path)
    output, log = tmp_path / "s.ome.zarr", tmp_path / "steps.log"
    assert run_stage(stage_command("segment", probability, output, **settings), log) == 0
    steps = crash_points.logged_steps(log)
    assert steps[0] == "seal s.ome.zarr.partial"
    blocks = [f"{z}_{y}_{x}" for z in range(2) for y in (0, 32) for x in (0, 32)]
    assert {f"record {phase}-{b}" for phase in ("fragments", "edges", "segments", "relabel") for b in blocks} <= set(
        steps)
    assert steps.index("state numbering") > max(steps.index(f"record segments-{b}") for b in blocks)
    assert steps[-2:] == ["clear s.ome.zarr.partial", "commit s.ome.zarr"]


def test_segment_killed_once_relabel_removed_its_scratch_tables_resumes(tmp_path):
    """The hole found by trying: every relabel record written, the block tables gone, and every rerun failed on a
    missing fragments table until someone deleted the partial output by hand."""
    probability, settings = segment_case(tmp_path)
    reference, log = tmp_path / "reference.ome.zarr", tmp_path / "steps.log"
    assert run_stage(stage_command("segment", probability, reference, **settings), log) == 0
    scratch_removed = crash_points.logged_steps(log).index("remove work") + 1
    output = tmp_path / "s.ome.zarr"
    command = stage_command("segment", probability, output, **settings)
    assert run_stage(command, tmp_path / "killed.log", crash_at=scratch_removed) == -9
    assert not output.exists() and not (outputs.partial_path(output) / "work").exists()
    assert run_stage(command, tmp_path / "rerun.log") == 0
    assert chunk_files(output) == chunk_files(reference)
