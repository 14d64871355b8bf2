"""Real Snakemake runs of the whole chain on a tiny synthetic config."""

from __future__ import annotations

import copy
import html
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
import zarr
from conftest import REPO
from PIL import Image
from scipy import ndimage

from unet_pipeline.distributed import records
from unet_pipeline.segmentation import metrics as scoring
from unet_pipeline.segmentation.cells import cell_mask
from unet_pipeline.stages.synth import synthetic_volume
from unet_pipeline.storage import ome_zarr, outputs
from unet_pipeline.storage.intensity_stats import intensity_range
from unet_pipeline.workflow import crash_sweep

TINY = {  # a labeled volume trained on, validated on and scored, and an unlabeled one that is only processed
    "name": "tiny",
    "volumes": {"a": {"synthetic": {"shape": [4, 64, 64], "seed": 1}},
                "b": {"synthetic": {"shape": [4, 64, 64], "seed": 2, "labels": False}}},
    "training": [{"volume": "a", "sections": [0, 2]}],
    "validation": [{"volume": "a", "sections": [2, 3]}],
    "evaluation": [{"volume": "a", "sections": [3, 4]}],
    "storage": {"chunks": [1, 32, 32]},
    "model": {"depth": 2, "base_features": 4},
    "train": {"iterations": 5, "tile": 36, "batch_size": 1, "validate_every": 5, "checkpoint_every": 5,
              "threads": 1},
    "predict": {"tile": [1, 64, 64]},
    "cluster": {"workers": 1},
    "report": {"sections": 1},
}


def environment() -> dict[str, str]:
    """The environment of a shell that never activated this interpreter's environment (README command 2 as
    written): its scripts folder is not on PATH, and the rules must still find `unet-pipeline`."""
    scripts = {sysconfig.get_path("scripts"), str(Path(sys.executable).parent)}
    path = [folder for folder in os.environ["PATH"].split(os.pathsep) if folder not in scripts]
    return {**os.environ, "PATH": os.pathsep.join(path)}


def snakemake_command(workdir: Path, config: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(config or workdir / "config.yaml"), "--cores", "2"]


def snakemake(workdir: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*snakemake_command(workdir, config), *args], capture_output=True, text=True, timeout=1200,
                          env=environment())


def planned_jobs(workdir: Path) -> set[str]:
    """Rules a dry run would execute."""
    result = snakemake(workdir, "--dry-run", "--quiet", "rules")
    assert result.returncode == 0, result.stderr
    return scheduled_rules(result.stdout + result.stderr)


def planned_volumes(workdir: Path) -> set[str]:
    """The volumes whose jobs a dry run would execute."""
    result = snakemake(workdir, "--dry-run")
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"wildcards:.*?\bvolume=([\w-]+)", result.stdout + result.stderr))


def scheduled_rules(log: str) -> set[str]:
    """The rules in a Snakemake log's 'Job stats' table (none when there was nothing to do)."""
    lines = log.splitlines()
    header = [i for i, line in enumerate(lines) if line.startswith("job ")]
    if not header:
        assert "Nothing to be done" in log, log[-3000:]
        return set()
    rules = set()
    for line in lines[header[0] + 2 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        rules.add(parts[0])
    return rules


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    (workdir / "config.yaml").write_text(yaml.safe_dump(TINY))
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, workdir / "results" / "tiny"


def test_chain_writes_every_output(tiny_run):
    _, run = tiny_run
    out = run / "volumes" / "a"
    raw, labels = ome_zarr.open_image(out / "raw.ome.zarr"), ome_zarr.open_image(out / "labels.ome.zarr")
    assert raw.shape == labels.shape == (4, 64, 64) and raw.dtype == np.uint8
    assert raw.chunks == (1, 32, 32)
    low, high = intensity_range(out / "intensity.json")  # no normalised copy: predict and train apply these
    assert (low, high) == tuple(float(v) for v in np.percentile(raw[:], [0.5, 99.5], method="inverted_cdf"))
    assert not (out / "norm.ome.zarr").exists()
    weights = ome_zarr.open_image(out / "weights.ome.zarr")[:]
    assert weights.shape == (4, 64, 64) and weights.min() > 0
    probs = ome_zarr.open_image(out / "probabilities.ome.zarr")[:]
    assert probs.shape == (2, 4, 64, 64) and probs.dtype == np.float16
    assert np.allclose(probs.astype(np.float32).sum(axis=0), 1, atol=2e-3)
    seg = ome_zarr.open_image(out / "segmentation.ome.zarr")[:]
    assert seg.dtype == np.uint32 and seg.shape == (4, 64, 64)
    checkpoint = torch.load(run / "model" / "checkpoint.pt", weights_only=True)
    assert checkpoint["model_config"]["depth"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sections"] == [3, 4]
    # the scores of section 3, computed again from the arrays the chain wrote (one block holds the section)
    truth = cell_mask(labels[3])
    predicted = probs[1, 3].astype(np.float32) > metrics["threshold"]
    table = scoring.section_table(seg[3], ndimage.label(truth)[0], 3)
    model = metrics["model"]
    assert model["pixel_error"] == pytest.approx(np.mean(predicted != truth), abs=1e-12)
    assert model["rand_error"] == pytest.approx(scoring.rand_scores(table)["rand_error"], abs=1e-12)
    assert model["variation_of_information"] == pytest.approx(
        scoring.info_scores(table)["variation_of_information"], abs=1e-9)
    assert model["warping_error"] == pytest.approx(scoring.warping_error(predicted, truth)[0], abs=1e-12)
    assert model["rand_error_best_threshold"] == pytest.approx(min(1 - p["v_rand"] for p in metrics["sweep"]))
    assert 0 <= model["v_rand_thinned"] <= 1
    baseline = metrics["baseline_raw_threshold"]
    assert 0 <= baseline["pixel_error"] <= 1 and 0 <= baseline["rand_error"] <= 1
    assert [point["threshold"] for point in metrics["sweep"]] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert (out / "metrics_sections.csv").read_text().count("\n") == 2
    page = (run / "report.html").read_text()
    # a section of each volume and the weight map of the training volume
    assert "pixel error" in page and page.count("data:image/png;base64,") == 3
    assert "Threshold sweep" in page and "Configuration" in page and "segments (random colours)" in page
    assert page.count("<svg") == 4  # matplotlib's charts, with their labels as text:
    for label in ("iteration", "weighted cross-entropy", "Validation errors (pooled over volumes)", "Rand error",
                  "cell-probability threshold", "V_Rand", "merge threshold"):
        assert f">{label}<" in page, label
    assert ome_zarr.voxel_size(out / "segmentation.ome.zarr") == ([50.0, 4.0, 4.0], "nanometer")
    assert ome_zarr.image_attrs(out / "probabilities.ome.zarr")["provenance"]["stage"] == "predict"
    assert not list(run.rglob("*.partial"))


def test_a_job_of_every_rule_killed_at_a_durable_step_reruns_to_the_same_outputs(tiny_run, tmp_path):
    """The CI sample of the crash-point sweep (`benchmarks/crash_sweep.py` tries 20 steps of each): one job of
    each rule, killed once, at its middle step or at one of its last five (commit, cleanup, pyramid, provenance)."""
    workdir, _ = tiny_run
    first_of_rule: dict[str, crash_sweep.Job] = {}
    for job in crash_sweep.planned_jobs(snakemake_command(workdir), workdir):
        first_of_rule.setdefault(job.rule, job)
    one_per_rule = list(first_of_rule.values())
    assert set(first_of_rule) == {"synth", "ingest", "preprocess", "weights", "train", "predict",
                                "segment", "evaluate", "report"}
    tried = []
    for index, job in enumerate(one_per_rule):
        def choose(steps: int, index: int = index) -> list[int]:
            return [max(1, steps // 2 if index % 2 == 0 else steps - index % 5)]

        tried += crash_sweep.sweep_job(job, workdir, tmp_path / job.rule, choose)
    failed = [(p.job.rule, p.step, p.label, p.killed, p.incomplete, p.rerun_status, p.different)
              for p in tried if not p.passed]
    assert not failed, failed


def test_an_unlabeled_volume_is_predicted_and_segmented_with_the_tuned_threshold(tiny_run):
    """Volume b has no labels: no labels, weights or metrics of it; its segmentation applies the merge threshold
    chosen on a's validation sections, and its provenance says so."""
    _, run = tiny_run
    b = run / "volumes" / "b"
    assert sorted(p.name for p in b.iterdir()) == ["intensity.json", "probabilities.ome.zarr", "raw.ome.zarr",
                                                   "segmentation.ome.zarr", "synthetic"]
    tuned = ome_zarr.image_attrs(run / "volumes" / "a" / "segmentation.ome.zarr")["provenance"]["blocks"]["tuning"]
    applied = ome_zarr.image_attrs(b / "segmentation.ome.zarr")["provenance"]["blocks"]["tuning"]
    assert tuned["tune_sections"] == [2, 3] and len(tuned["curve"]) == 9
    assert applied["merge_threshold"] == tuned["merge_threshold"] and applied["tune_sections"] == [2, 3]
    assert applied["tuned_on"] == "results/tiny/volumes/a/segmentation.ome.zarr"
    segmentation = ome_zarr.open_image(b / "segmentation.ome.zarr")[:]
    assert segmentation.shape == (4, 64, 64) and segmentation.max() > 3


def test_rerun_does_nothing_and_a_changed_value_reruns_only_its_stage_onwards(tiny_run):
    workdir, _ = tiny_run
    assert planned_jobs(workdir) == set()
    changed = {**TINY, "segment": {"threshold": 0.4}}
    (workdir / "config.yaml").write_text(yaml.safe_dump(changed))
    try:
        assert planned_jobs(workdir) == {"segment", "evaluate", "report", "all"}
        changed = {**TINY, "weights": {"w0": 5.0}}
        (workdir / "config.yaml").write_text(yaml.safe_dump(changed))
        assert planned_jobs(workdir) == {"weights", "train", "predict", "segment", "evaluate", "report", "all"}
        changed = {**TINY, "volumes": {**TINY["volumes"], "b": {"synthetic": {"shape": [4, 64, 64], "seed": 3,
                                                                               "labels": False}}}}
        (workdir / "config.yaml").write_text(yaml.safe_dump(changed))  # another stack b: only b's chain
        assert planned_jobs(workdir) == {"synth", "ingest", "preprocess", "predict", "segment", "report", "all"}
    finally:
        (workdir / "config.yaml").write_text(yaml.safe_dump(TINY))


def test_dry_run_of_the_default_config_plans_the_whole_chain(tmp_path):
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--cores", "2",
                             "--directory", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            env=environment())
    assert result.returncode == 0, result.stderr
    for rule in ("synth", "ingest", "preprocess", "weights", "train", "predict", "segment", "evaluate", "report"):
        assert f"rule {rule}:" in result.stdout


def test_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and "Congratulations" in result.stdout + result.stderr, result.stdout


@pytest.mark.slow
def test_default_config_beats_the_raw_threshold_baseline(tmp_path):
    """README command 1's chain: the trained U-Net must beat the best global threshold of the raw."""
    result = snakemake(tmp_path, config=REPO / "config" / "config.yaml")
    assert result.returncode == 0, result.stderr[-5000:]
    for volume in ("train", "scored"):  # held-out sections of the training volume, and a volume never trained on
        metrics = json.loads((tmp_path / "results" / "demo" / "volumes" / volume / "metrics.json").read_text())
        assert metrics["model"]["pixel_error"] < metrics["baseline_raw_threshold"]["pixel_error"], volume
        assert metrics["model"]["rand_error"] < metrics["baseline_raw_threshold"]["rand_error"], volume
    assert (tmp_path / "results" / "demo" / "volumes" / "unlabeled" / "segmentation.ome.zarr").is_dir()


def test_work_an_orphaned_job_finished_after_snakemake_was_killed_is_kept(tmp_path):
    """SIGKILL Snakemake alone while predict runs (its job lives on and finishes), then `--unlock` and rerun with
    the local profile, as the README says: the finished probabilities are kept, not deleted and recomputed."""
    config = {**TINY, "volumes": {"a": {"synthetic": {"shape": [4, 128, 128], "seed": 1}}},
              "model": {"depth": 2, "base_features": 16}, "predict": {"tile": [1, 32, 32], "tta": True}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    profile = ("--profile", str(REPO / "profiles" / "local"))
    first = subprocess.Popen([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                              str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), *profile],
                             env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "results" / "tiny"
    probabilities = out / "volumes" / "a" / "probabilities.ome.zarr"
    deadline = time.monotonic() + 600
    while not (outputs.partial_path(probabilities) / records.RECORDS).exists():
        assert first.poll() is None and time.monotonic() < deadline, "predict never started"
        time.sleep(0.1)
    first.kill()  # Snakemake only: its predict job runs on, an orphan
    first.wait()
    while not probabilities.exists() or probabilities.with_name(probabilities.name + ".lock").exists():
        assert time.monotonic() < deadline, "the orphaned predict job never finished"
        time.sleep(0.2)
    finished = ome_zarr.image_attrs(probabilities)["provenance"]["finished"]
    assert snakemake(tmp_path, *profile, "--unlock").returncode == 0
    rerun = snakemake(tmp_path, *profile)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "predict" not in scheduled_rules(rerun.stdout + rerun.stderr)
    assert ome_zarr.image_attrs(probabilities)["provenance"]["finished"] == finished  # the orphan's output, kept
    assert (out / "volumes" / "a" / "segmentation.ome.zarr").exists() and (out / "report.html").exists()


RUN_ONLY_CHANGES = [  # (config block, key, a new value): each changes only how a stage runs
    ("cluster", "kind", "slurm"), ("cluster", "workers", 3), ("cluster", "threads_per_worker", 2),
    ("cluster", "address", "tcp://10.0.0.1:8786"), ("cluster", "min_jobs", 2), ("cluster", "max_jobs", 9),
    ("cluster", "job_cores", 8), ("cluster", "job_memory", "64GB"), ("cluster", "walltime", "12:00:00"),
    ("cluster", "job_gpus", 2), ("cluster", "extra_directives", ["--constraint=a100"]), ("cluster", "interface", "ib0"),
    ("cluster", "log_dir", "other-logs"), ("slurm", "partition", "gpu"), ("slurm", "account", "lab"),
    ("slurm", "qos", "high"), ("slurm", "gpus", False), ("slurm", "runtime_factor", 5.0),
    ("train", "threads", 2), ("train", "loader_workers", 3), ("train", "device", "cpu"),
    ("predict", "batch_tiles", 4), ("predict", "memory_budget_mb", 512), ("predict", "device", "cpu"),
    ("predict", "torch_threads", 2), ("predict", "stall_timeout_s", 99), ("segment", "stall_timeout_s", 99),
    ("evaluate", "stall_timeout_s", 99),
]


def with_changes(config: dict, changes: list[tuple[str, str, object]]) -> dict:
    """`config` with each (block, key, value) of `changes` set."""
    changed = copy.deepcopy(config)
    for block, key, value in changes:
        changed.setdefault(block, {})[key] = value
    return changed


def test_changing_how_a_stage_runs_never_reruns_finished_work(tiny_run):
    """Every run-only key changed at once (threads, workers, device, cluster, Slurm placement, timeouts):
    `snakemake -n` has nothing to do (no change can hide another's rerun). Should it plan work, each key is
    tried alone to name the culprits."""
    workdir, _ = tiny_run
    try:
        (workdir / "config.yaml").write_text(yaml.safe_dump(with_changes(TINY, RUN_ONLY_CHANGES)))
        if planned_jobs(workdir):
            culprits = []
            for change in RUN_ONLY_CHANGES:
                (workdir / "config.yaml").write_text(yaml.safe_dump(with_changes(TINY, [change])))
                culprits += [change] if planned_jobs(workdir) else []
            pytest.fail(f"these run-only changes reran work: {culprits}")
    finally:
        (workdir / "config.yaml").write_text(yaml.safe_dump(TINY))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
PROBE = ("<script>document.title = JSON.stringify({overflow: document.documentElement.scrollWidth - window.innerWidth,"
         " charts: [...document.querySelectorAll('svg')].filter(s => s.getBoundingClientRect().width > 300).length,"
         " images: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length})</script>")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")
def test_report_renders_in_headless_chromium_within_the_page_width(tiny_run, tmp_path):
    """The report, opened in a real browser 1280 px wide: nothing wider than the page, every chart drawn
    at a readable size, every image decoded; and a screenshot that is not blank."""
    _, out = tiny_run
    probed = tmp_path / "probed.html"  # the report with a probe that writes what it measured into the title
    probed.write_text((out / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"]
    dom = subprocess.run([*browser, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    measured = json.loads(html.unescape(re.search(r"<title>(.*?)</title>", dom.stdout).group(1)))
    assert measured["overflow"] <= 0, "the page is wider than the window"  # (negative: the scrollbar)
    assert measured["charts"] == 4 and measured["images"] == 3
    shot = tmp_path / "report.png"
    subprocess.run([*browser, f"--screenshot={shot}", (out / "report.html").as_uri()], capture_output=True,
                   timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape[1] == 1280 and pixels.std() > 10  # text, tables and charts, not an empty page


def test_a_run_with_a_checkpoint_only_processes_and_another_checkpoint_reruns_predict_onwards(tiny_run, tmp_path):
    """`model.checkpoint` set: no labels are ingested, no weights, no training; a TIFF stack is predicted and
    segmented with the model trained in the tiny run, and so is a Zarr array, read in place. Pointing at
    another checkpoint reruns predict and segment of every processed volume, and nothing before them; a stack
    that changed on disk after the run (the TIFF file, or one chunk file rewritten in place in the Zarr
    array) is processed again from ingest on, never kept. A tissue mask skips the tiles it does not touch, and a
    new mask reruns the mask's ingest, predict and segment alone."""
    _, trained = tiny_run
    first = tmp_path / "first.pt"
    shutil.copy(trained / "model" / "checkpoint.pt", first)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, synthetic_volume((2, 64, 64), seed=5)[0])
    chunked = zarr.create_array(str(tmp_path / "chunked.zarr"), shape=(2, 64, 64), chunks=(1, 32, 32),
                                dtype=np.uint8, zarr_format=2)
    chunked[:] = synthetic_volume((2, 64, 64), seed=7)[0]
    volumes = {"stack": {"raw": str(stack)}, "chunked": {"raw": str(tmp_path / "chunked.zarr")}}
    config = {"name": "apply", "volumes": {name: {**given, "voxel_size": [50.0, 4.0, 4.0]}
                                           for name, given in volumes.items()},
              "model": {"checkpoint": str(first)}, "evaluation": [], "storage": {"chunks": [1, 32, 32]},
              "segment": {"merge_threshold": 0.5}, "predict": {"tile": [1, 64, 64]}, "cluster": {"workers": 1},
              "report": {"sections": 1}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path)
    assert result.returncode == 0, result.stderr[-5000:]
    assert scheduled_rules(result.stdout + result.stderr) == {"ingest", "preprocess", "predict", "segment", "report",
                                                                "all"}
    out = tmp_path / "results" / "apply"
    assert sorted(p.name for p in (out / "volumes" / "stack").iterdir()) == [
        "intensity.json", "probabilities.ome.zarr", "raw.ome.zarr", "segmentation.ome.zarr"]
    assert not (out / "model").exists()
    assert ome_zarr.linked_level0(out / "volumes" / "chunked" / "raw.ome.zarr") == tmp_path / "chunked.zarr"
    assert ome_zarr.linked_level0(out / "volumes" / "stack" / "raw.ome.zarr") is None  # a TIFF is copied
    predicted = ome_zarr.image_attrs(out / "volumes" / "stack" / "probabilities.ome.zarr")["provenance"]
    assert predicted["inputs"]["checkpoint"] == str(first)
    assert "No training in this run" in (out / "report.html").read_text()
    second = tmp_path / "second.pt"
    torch.save({**torch.load(first, weights_only=True), "iteration": 6}, second)  # another file, another model
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**config, "model": {"checkpoint": str(second)}}))
    assert planned_jobs(tmp_path) == {"predict", "segment", "report", "all"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert planned_jobs(tmp_path) == set()
    chunked[1, :32, :32] = 0  # one chunk file of the Zarr source rewritten: the folder's own mtime stays
    assert planned_jobs(tmp_path) == {"ingest", "preprocess", "predict", "segment", "report", "all"}
    assert planned_volumes(tmp_path) == {"chunked"}
    tifffile.imwrite(stack, synthetic_volume((2, 64, 64), seed=6)[0])  # the stack changed under the run
    assert planned_jobs(tmp_path) == {"ingest", "preprocess", "predict", "segment", "report", "all"}
    assert planned_volumes(tmp_path) == {"chunked", "stack"}
    tissue = np.zeros((2, 4, 4), np.uint8)  # a tissue mask of the stack at 1/16: none in its second section
    tissue[0, 1, 2] = 1
    tifffile.imwrite(tmp_path / "tissue.tif", tissue)
    masked = {**config, "volumes": {**config["volumes"], "stack": {**config["volumes"]["stack"],
                                                                   "mask": str(tmp_path / "tissue.tif")}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(masked))
    result = snakemake(tmp_path)
    assert result.returncode == 0, result.stderr[-5000:]
    stack_out = out / "volumes" / "stack"
    assert ome_zarr.image_attrs(stack_out / "probabilities.ome.zarr")["provenance"]["tiles"]["skipped"] == 1
    assert not ome_zarr.open_image(stack_out / "probabilities.ome.zarr")[:, 1].any()
    assert not ome_zarr.open_image(stack_out / "segmentation.ome.zarr")[1].any()
    tissue[1, 3, 3] = 1
    tifffile.imwrite(tmp_path / "tissue.tif", tissue)  # another mask: predict and segment again, nothing before
    assert planned_jobs(tmp_path) == {"ingest", "predict", "segment", "report", "all"}
    assert planned_volumes(tmp_path) == {"stack"}
