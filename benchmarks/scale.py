"""How the cost of the stages after training grows with the volume: 1x, 4x and 16x, in one run.

Each stage runs as the workflow runs it (`unet-pipeline <stage>` in its own
process, with the default config's settings and its local Dask cluster of 2
workers): ingest of a TIFF stack, preprocess, predict with a fixed tiny
U-Net (depth 2, 4 features, so that the network does not dominate; trained
first by the workflow on the default synthetic volume, so that its cells look
like real work downstream), segment (agglomeration with a fixed merge
threshold: no tuning) and evaluate (every section; without the optional
threshold sweep, which labels the volume once per threshold). The volumes
are 2048 x 2048 sections of a synthetic EM-like block tiled in y, x and z
(labels kept distinct per copy); by default the 16x volume is 256
sections, 1.07 GB of raw (about 25 minutes here).

Printed per stage and scale: seconds, nanoseconds per voxel and the peak
resident memory of the largest process (the stage or one Dask worker) and of
all of them together, each against the 1x run. Goal: time per voxel within
1.2x of the 1x run and peak memory below 1.2x of it, for every stage. Last,
an estimate for a terabyte from the 16x rates.

    python benchmarks/scale.py [--scales 1,4,16] [--sections 16] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import tifffile
import yaml
from chain import results as results_of
from chain import run_workflow, write_config
from snakemake.utils import validate

from unet_pipeline.stages.synth import synthetic_volume
from unet_pipeline.storage import chunk_hashes, ome_zarr
from unet_pipeline.workflow.stage_config import run_settings, stage_settings

REPO = Path(__file__).resolve().parents[1]
BLOCK = (16, 512, 512)  # the synthetic block, tiled
EDGE = 2048  # section size
VOLUME = "stack"  # the config's one volume: the TIFF stack, with a voxel size; every section scored
CHANGES = {  # to the default config: fixed work per voxel
    "segment": {"merge_threshold": 0.5},
    "evaluate": {"baseline": False, "thresholds": []},  # the sweep: 9 more labelling passes
}


TINY_MODEL = {"model": {"depth": 2, "base_features": 4}, "train": {"iterations": 300, "validate_every": 300}}


def tiny_checkpoint(folder: Path) -> Path:
    """The fixed tiny model, trained by the workflow on the default synthetic volume."""
    config = write_config(REPO / "config" / "config.yaml", folder, TINY_MODEL)
    checkpoint = results_of(config) / "model" / "checkpoint.pt"
    run_workflow(folder, [checkpoint], cores=2)
    return checkpoint


def stage_config() -> dict[str, Any]:
    """The default config with `CHANGES`, validated and filled with the schema's defaults."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for section, values in CHANGES.items():
        config[section].update(values)
    config.update(volumes={VOLUME: {"raw": "raw.tif", "labels": "labels.ome.zarr", "voxel_size": [50.0, 4.0, 4.0]}},
                  training=[{"volume": VOLUME}], validation=[], evaluation=[{"volume": VOLUME}])
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def write_inputs(folder: Path, sections: int, block: tuple[np.ndarray, np.ndarray], config: dict[str, Any]) -> None:
    """raw.tif (a stack, ingested by the benchmark) and labels.ome.zarr (ground truth, written directly)."""
    raw_block, label_block = block
    copies = (EDGE // BLOCK[1], EDGE // BLOCK[2])
    shift = int(label_block.max()) + 1
    offsets = np.arange(copies[0] * copies[1], dtype=np.uint32).reshape(copies) * shift
    label_tile = np.tile(label_block, (1, *copies))
    spread = np.kron(offsets, np.ones(BLOCK[1:], np.uint32))  # each copy's id offset, per pixel
    labels = ome_zarr.create_image(folder / "labels.ome.zarr", (sections, EDGE, EDGE), np.uint32,
                                 config["storage"]["chunks"], config["storage"]["compression"], [50.0, 4.0, 4.0],
                                 "nanometer", "labels", labels=True, pyramid=False)
    hashes = {}
    with tifffile.TiffWriter(folder / "raw.tif", bigtiff=True) as tif:
        for z in range(sections):
            repeat, section = divmod(z, BLOCK[0])
            tif.write(np.tile(raw_block[section], copies), photometric="minisblack", contiguous=True)
            ids = label_tile[section] + spread + np.uint32(repeat * shift * offsets.size)
            values = np.where(label_tile[section] > 0, ids, 0).astype(np.uint32)[np.newaxis]
            labels[z : z + 1] = values
            hashes.update(chunk_hashes.chunk_hashes(values, (z, 0, 0), labels.chunks))
    digest = chunk_hashes.write_manifest(folder / "labels.ome.zarr", hashes, labels)
    ome_zarr.set_attrs(folder / "labels.ome.zarr", provenance={"content_sha256": digest})


class PeakTree:
    """Peak resident memory of a process and its descendants, sampled every 20 ms: of the largest one, and of
    all together."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.root = psutil.Process(process.pid)
        self.largest = self.total = 0

    def sample(self) -> None:
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        sizes = []
        for process in tree:
            try:
                sizes.append(process.memory_info().rss)
            except psutil.Error:
                pass
        self.largest = max(self.largest, max(sizes, default=0))
        self.total = max(self.total, sum(sizes))


def run_stage(stage: str, paths: list[Path], config: dict[str, Any], log: Path,
              **inputs: str) -> tuple[float, PeakTree]:
    """Run one stage as the workflow does (`inputs`: the paths among its settings, here instead of the
    workflow's); its wall seconds and memory peaks. Exits with its log if it fails."""
    command = [sys.executable, "-m", "unet_pipeline.cli", stage, *map(str, paths),
               "--settings", json.dumps({**stage_settings(config, stage, VOLUME), **inputs}),
               "--run", json.dumps(run_settings(config, stage))]
    start = time.perf_counter()
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        peaks = PeakTree(process)
        while process.poll() is None:
            peaks.sample()
            time.sleep(0.02)
    seconds = time.perf_counter() - start
    if process.returncode:
        sys.exit(f"{stage} failed:\n{log.read_text()[-4000:]}")
    return seconds, peaks


def run_scale(folder: Path, sections: int, block: tuple[np.ndarray, np.ndarray], checkpoint: Path,
              config: dict[str, Any]) -> dict[str, tuple[float, PeakTree]]:
    folder.mkdir(parents=True)
    write_inputs(folder, sections, block, config)
    raw, intensity = folder / "raw.ome.zarr", folder / "intensity.json"
    probabilities, segmentation = folder / "probabilities.ome.zarr", folder / "segmentation.ome.zarr"
    stages = {
        "ingest": ["raw", folder / "raw.tif", raw],
        "preprocess": [raw, intensity],
        "predict": [raw, checkpoint, probabilities],
        "segment": [probabilities, segmentation],
        "evaluate": [segmentation, probabilities, folder / "labels.ome.zarr", folder / "metrics.json"],
    }
    measured = {}
    for stage, paths in stages.items():
        inputs = {"intensity": str(intensity)} if stage == "predict" else {}
        measured[stage] = run_stage(stage, paths, config, folder / f"{stage}.log", **inputs)
        print(f"  {sections} sections: {stage} {measured[stage][0]:.1f} s", flush=True)
    return measured


def report(results: dict[int, dict[str, tuple[float, PeakTree]]], sections: dict[int, int]) -> None:
    base = min(results)
    print(f"\nsections of {EDGE} x {EDGE}; ratios against the {base}x run (goals: time per voxel <= 1.2, "
          "peak memory < 1.2)")
    print(f"{'stage':<11}{'scale':>6}{'Gvoxel':>8}{'s':>8}{'ns/voxel':>10}{'ratio':>7}"
          f"{'largest MiB':>13}{'ratio':>7}{'all MiB':>9}{'ratio':>7}")
    for stage in results[base]:
        first_seconds, first_peaks = results[base][stage]
        first_rate = first_seconds / (sections[base] * EDGE**2)
        for scale, measured in results.items():
            seconds, peaks = measured[stage]
            voxels = sections[scale] * EDGE**2
            print(f"{stage:<11}{scale:>5}x{voxels / 1e9:>8.2f}{seconds:>8.1f}{seconds / voxels * 1e9:>10.1f}"
                  f"{seconds / voxels / first_rate:>7.2f}{peaks.largest / 2**20:>13.0f}"
                  f"{peaks.largest / first_peaks.largest:>7.2f}{peaks.total / 2**20:>9.0f}"
                  f"{peaks.total / first_peaks.total:>7.2f}")
    largest = max(results)
    per_voxel = sum(seconds for seconds, _ in results[largest].values()) / (sections[largest] * EDGE**2)
    terabyte = 1e12  # uint8 raw voxels
    print(f"\nat the {largest}x rates, all five stages take {per_voxel * 1e9:.0f} ns per voxel on this machine "
          f"(2 Dask workers): a terabyte of raw is {per_voxel * terabyte / 3600:.0f} hours here, or "
          f"{per_voxel * terabyte / 3600 / 50:.1f} hours on 50 such machines if the rates hold (the blockwise "
          "stages' work divides among workers; what does not is listed above as a growing ratio)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="1,4,16")
    parser.add_argument("--sections", type=int, default=16, help="sections of the 1x volume")
    parser.add_argument("--scratch", type=Path, help="where the volumes go (default: the system's temporary folder)")
    args = parser.parse_args()
    scales = [int(n) for n in args.scales.split(",")]
    config = stage_config()
    block = synthetic_volume(BLOCK, seed=0)
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        folder = Path(tmp)
        checkpoint = tiny_checkpoint(folder / "model")
        results, sections = {}, {}
        for scale in scales:
            sections[scale] = scale * args.sections
            print(f"{scale}x: {sections[scale]} sections of {EDGE} x {EDGE}", flush=True)
            results[scale] = run_scale(folder / f"{scale}x", sections[scale], block, checkpoint, config)
        report(results, sections)


if __name__ == "__main__":
    main()
