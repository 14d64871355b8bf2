"""Against a real single-node Slurm (.ci/slurm-local.sh): the chain through `snakemake --profile slurm`,
and predict on Dask workers that are Slurm jobs. Skipped only when Slurm cannot be started here."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from conftest import REPO, write_image
from test_predict import run_predict
from test_workflow import TINY, environment, scheduled_rules

from unet_pipeline.distributed import records
from unet_pipeline.storage import ome_zarr
from unet_pipeline.storage.intensity_stats import intensity_range


def slurm_up() -> str | None:
    """None when Slurm runs here (started by .ci/slurm-local.sh if need be), else why not."""
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        return "neither Slurm nor apt-get is available"
    result = subprocess.run(["bash", str(REPO / ".ci" / "slurm-local.sh"), "up"], capture_output=True, text=True,
                            timeout=600)
    return None if result.returncode == 0 else f"Slurm could not be started: {result.stderr[-2000:]}"


REASON = slurm_up()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def queue(settle_s: float = 30) -> list[str]:
    """Jobs still pending, running or completing, once cancelled ones had `settle_s` to leave."""
    deadline = time.monotonic() + settle_s
    while True:
        listing = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True).stdout
        jobs = listing.split("\n")[:-1]
        if not jobs or time.monotonic() > deadline:
            return jobs
        time.sleep(0.5)


SLURM_PROFILE = ("--profile", "slurm", "--profile", "profiles/slurm-squeue")


def snakemake_command(workdir, *args):
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(workdir / "config.yaml"), *args]


def snakemake(workdir, *args):
    # run from the repository root, as users do: `--profile slurm` finds ./slurm there
    return subprocess.run(["timeout", "-s", "KILL", "1200", *snakemake_command(workdir, *args)], cwd=REPO,
                          capture_output=True, text=True, env=environment())


def test_predict_on_dask_workers_that_are_slurm_jobs(tmp_path, random_checkpoint):
    volume = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    image = write_image(tmp_path / "image.ome.zarr", volume, (1, 32, 32))
    checkpoint = random_checkpoint(depth=2)
    run_predict(image, checkpoint, tmp_path / "local.ome.zarr", tile=[1, 32, 32])
    cluster = {"kind": "slurm", "workers": 1, "threads_per_worker": 1, "address": None, "min_jobs": 2, "max_jobs": 2,
               "job_cores": 1, "job_memory": "2GB", "walltime": "00:10:00", "job_gpus": 1, "extra_directives": [],
               "interface": "lo", "log_dir": str(tmp_path / "dask-logs"),
               "slurm": {"partition": "debug", "account": None, "qos": None}}
    stats = run_predict(image, checkpoint, tmp_path / "slurm.ome.zarr", tile=[1, 32, 32], cluster_settings=cluster)
    assert stats["computed"] == 16
    assert np.array_equal(ome_zarr.open_image(tmp_path / "slurm.ome.zarr")[:],
                          ome_zarr.open_image(tmp_path / "local.ome.zarr")[:])
    assert list((tmp_path / "dask-logs").glob("*.err")), "no worker job wrote a log"
    assert not queue(), queue()


def test_segment_on_dask_workers_that_are_slurm_jobs(tmp_path, dask_cluster):
    from conftest import probability_image, segment_settings
    from test_segment import cells_probability

    from unet_pipeline.stages.segment import segment

    probabilities = probability_image(tmp_path / "p.ome.zarr", cells_probability((2, 96, 96), 8), (1, 32, 32))
    settings = segment_settings(dask_cluster, block=[1, 48, 48], context=[0, 32, 32])
    local = segment(probabilities, tmp_path / "local.ome.zarr", **settings)
    cluster = {"kind": "slurm", "workers": 1, "threads_per_worker": 1, "address": None, "min_jobs": 2, "max_jobs": 2,
               "job_cores": 1, "job_memory": "2GB", "walltime": "00:10:00", "job_gpus": 0, "extra_directives": [],
               "interface": "lo", "log_dir": str(tmp_path / "dask-logs"),
               "slurm": {"partition": "debug", "account": None, "qos": None}}
    on_slurm = segment(probabilities, tmp_path / "slurm.ome.zarr", **{**settings, "cluster_settings": cluster})
    assert on_slurm == local and local["blocks"] == 2 * 2 * 2
    assert np.array_equal(ome_zarr.open_image(tmp_path / "slurm.ome.zarr")[:],
                          ome_zarr.open_image(tmp_path / "local.ome.zarr")[:])
    assert list((tmp_path / "dask-logs").glob("*.err")), "no worker job wrote a log"
    assert not queue(), queue()


def test_the_chain_through_the_slurm_profile_killed_and_rerun_equals_a_local_run(tmp_path):
    """The chain through `snakemake --profile slurm`, every rule a real sbatch job. Snakemake is SIGKILLed while
    predict runs as a job, then `--unlock` and rerun, as the README says: nothing finished is redone, and every
    output equals that of a local run."""
    config = copy.deepcopy(TINY)
    config["volumes"] = {"a": {"synthetic": {"shape": [4, 256, 256], "seed": 1}}}  # every Slurm job costs seconds
    config["model"] = {"depth": 3, "base_features": 16}  # predict: 256 tiles x 8 flips, about 20 s
    config["predict"] = {"tile": [1, 32, 32], "batch_tiles": 1, "tta": True}
    for name in ("local", "slurm"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(config))
    local = snakemake(tmp_path / "local", "--cores", "2")
    assert local.returncode == 0, local.stderr[-3000:]

    workdir = tmp_path / "slurm"
    run = workdir / "results" / "tiny"
    out = run / "volumes" / "a"
    with open(tmp_path / "first.log", "w") as first_log:
        first = subprocess.Popen(snakemake_command(workdir, *SLURM_PROFILE), cwd=REPO, env=environment(),
                                 stdout=first_log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while not (out / "probabilities.ome.zarr.partial" / records.RECORDS).exists():
            assert first.poll() is None and time.monotonic() < deadline, "predict never started"
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finished_before = {path: path.stat().st_mtime_ns for path in (out / "weights.ome.zarr",
                                                                  run / "model" / "checkpoint.pt")}
    assert queue(settle_s=0), "the killed run's predict job should still be running"

    unlock = snakemake(workdir, *SLURM_PROFILE, "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    rerun = snakemake(workdir, *SLURM_PROFILE)
    assert rerun.returncode == 0, rerun.stderr[-5000:]
    log = (tmp_path / "first.log").read_text() + rerun.stdout + rerun.stderr
    submitted = [line for line in log.splitlines() if "has been submitted with SLURM jobid" in line]
    assert len(submitted) >= 10, log[-3000:]  # every rule but `all` ran as a real sbatch job
    assert scheduled_rules(rerun.stdout + rerun.stderr) <= {"export", "predict", "segment", "evaluate", "report",
                                                            "all"}
    assert {path: path.stat().st_mtime_ns for path in finished_before} == finished_before
    # the orphaned predict job computed every tile once; a rerun predict job waited for it and kept its output
    assert json.loads(json.dumps(ome_zarr.image_attrs(out / "probabilities.ome.zarr")["provenance"]["tiles"])) == {
        "tiles": 256, "computed": 256, "resumed": 0, "skipped": 0}
    predict_log = (run / "logs" / "a" / "predict.log").read_text()
    if "predict" in scheduled_rules(rerun.stdout + rerun.stderr):
        assert "is already complete for this model, input and settings" in predict_log, predict_log
    local_out = tmp_path / "local" / "results" / "tiny" / "volumes" / "a"
    for image in ("raw", "labels", "weights", "probabilities", "segmentation"):
        a = ome_zarr.open_image(local_out / f"{image}.ome.zarr")[:]
        assert np.array_equal(a, ome_zarr.open_image(out / f"{image}.ome.zarr")[:]), image
    assert intensity_range(local_out / "intensity.json") == intensity_range(out / "intensity.json")
    metrics = [json.loads((folder / "metrics.json").read_text())["model"] for folder in (local_out, out)]
    assert metrics[0] == metrics[1]
    assert not queue(), queue()
