"""Benchmark of blockwise segmentation and evaluation, with baselines measured in the same run.

1. Throughput: `unet-pipeline segment` (Zarr in, blocks on a Dask cluster,
   Zarr out) with 1 and 2 workers, against the same method run once on the
   whole volume in one process (Zarr read whole, the package's array
   functions, Zarr written). Goals: blockwise >= 0.8x single-process on 1
   worker, >= 1.6x on 2 workers.
2. Evaluate's throughput against segment's (2 workers each). Goal >= 1.0x.
3. Peak memory (client, scheduler and workers) of segment for a volume 4x
   larger than another. Goal < 1.2x.
4. ISBI 2012 (`--isbi results/isbi2012`, the results folder of a run of
   config/isbi2012.yaml): the foreground-restricted Rand error of each
   method on the same probabilities of the validation sections 16-19.
   Thresholds and merge thresholds are chosen by 2-fold cross-validation
   (tuned on 16-17, scored on 18-19, and the other way round; pooled), and
   the baseline (threshold + components) also gets the best single
   threshold chosen on the scored sections themselves (an upper bound).
   Goal: the best agglomeration at most half the Rand error of the best
   threshold + components.

    python benchmarks/segment.py --isbi /path/to/results/isbi2012
    python benchmarks/segment.py --quick        # small volumes, for a smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from distributed import LocalCluster
from measure import PeakMemory
from scipy import ndimage

from unet_pipeline.core.probabilities import CELL_CHANNEL, as_probability
from unet_pipeline.segmentation.in_memory import segmentations
from unet_pipeline.segmentation.settings import Settings
from unet_pipeline.stages.evaluate import evaluate
from unet_pipeline.stages.segment import segment
from unet_pipeline.stages.synth import synthetic_volume
from unet_pipeline.storage import ome_zarr, pyramid_writer

COMPRESSION = ome_zarr.DEFAULT_COMPRESSION
CHUNKS = (1, 256, 256)
SWEEP = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def settings(cluster: dict[str, Any], **changes: Any) -> dict[str, Any]:
    base = {"method": "agglomerate", "mode": "2d", "connectivity": None, "threshold": 0.5, "seed_threshold": 0.9,
            "seed_distance": 4, "agglomeration": "gasp", "merge_threshold": 0.5, "merge_thresholds": [0.5],
            "tune_sections": None, "labels": None, "threshold_from": None, "ignore_label": None, "min_size": 0,
            "block": [4, 1024, 1024],
            "context": [0, 64, 64],
            "compression": COMPRESSION, "cluster_settings": cluster, "stall_timeout_s": 3600}
    return {**base, **changes}


def evaluate_settings(cluster: dict[str, Any], **changes: Any) -> dict[str, Any]:
    base = {"sections": None, "threshold": 0.5, "thresholds": [], "warping": True, "baseline_raw": None,
            "block": [4, 1024, 1024], "context": [0, 64, 64], "cluster_settings": cluster, "stall_timeout_s": 3600}
    return {**base, **changes}


def make_volume(folder: Path, name: str, shape: tuple[int, int, int]) -> tuple[Path, Path]:
    """A probability image from the synthetic EM's cells (blurred, with noise) and its labels; the synthetic
    volume is made in 512 x 512 tiles (cells of each tile with their own ids), which is much faster."""
    tile = (shape[0], min(shape[1], 512), min(shape[2], 512))
    _, cells = synthetic_volume(tile, seed=0)
    reps = (1, -(-shape[1] // tile[1]), -(-shape[2] // tile[2]))
    offsets = np.arange(reps[1] * reps[2]).reshape(1, reps[1], reps[2]) * (int(cells.max()) + 1)
    labels = np.where(np.tile(cells, reps) > 0, np.tile(cells, reps) + np.kron(offsets, np.ones(tile, np.int64)), 0)
    labels = labels[:, :shape[1], :shape[2]].astype(np.uint32)
    cell = np.stack([ndimage.binary_erosion(section > 0) for section in labels]).astype(np.float32)
    noise = np.random.default_rng(0).random(shape, dtype=np.float32)
    cell = np.clip(ndimage.gaussian_filter(0.8 * cell + 0.2 * noise, (0, 1.5, 1.5)), 0, 1)
    probabilities = folder / f"{name}-probabilities.ome.zarr"
    ome_zarr.create_image(probabilities, shape, np.float16, CHUNKS, COMPRESSION, (50, 4, 4), "nanometer", "p",
                    channels=2)[:] = np.stack([1 - cell, cell]).astype(np.float16)
    labels_path = folder / f"{name}-labels.ome.zarr"
    ome_zarr.create_image(labels_path, shape, labels.dtype, CHUNKS, COMPRESSION, (50, 4, 4), "nanometer", "labels",
                    labels=True)[:] = labels
    return probabilities, labels_path


def single_process(probabilities: Path, output: Path, method: str) -> float:
    """The same method on the whole volume in this process: read whole, the package's array functions, write
    the same OME-Zarr label image (with its pyramid) as segment."""
    start = time.perf_counter()
    cell = as_probability(ome_zarr.open_image(probabilities)[CELL_CHANNEL])
    settings = Settings.of(method=method, mode="2d", connectivity=None, threshold=0.5, seed_threshold=0.9,
                           seed_distance=4, agglomeration="gasp", merge_threshold=0.5, merge_thresholds=[0.5],
                           tune_sections=None, min_size=0)
    [(_, labels)] = segmentations(cell, settings, (50, 4, 4), [0.5])
    ome_zarr.create_image(output, cell.shape, np.uint32, CHUNKS, COMPRESSION, (50, 4, 4), "nanometer", "segmentation",
                    labels=True)[:] = labels
    pyramid_writer.write_pyramid(output)
    return time.perf_counter() - start


def timed(function: Any, *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


def throughput(folder: Path, quick: bool, repeats: int = 2) -> None:
    shape = (2, 1024, 1024) if quick else (8, 2048, 2048)
    probabilities, labels = make_volume(folder, "throughput", shape)
    voxels = np.prod(shape)
    print(f"[throughput] {shape} float16 probabilities, chunks {CHUNKS}, blocks 4 x 1024 x 1024 with context 64, "
          f"best of {repeats}")
    seconds: dict[str, float] = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        two = {"kind": "address", "address": cluster.scheduler_address, "workers": 2, "threads_per_worker": 1}
        with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as single:
            one = {"kind": "address", "address": single.scheduler_address, "workers": 1, "threads_per_worker": 1}
            for method in ("components", "agglomerate"):
                runs: dict[str, list[float]] = {"whole": [], "1 worker": [], "2 workers": []}
                for repeat in range(repeats):  # interleaved: this machine is noisy
                    runs["whole"].append(single_process(probabilities, folder / f"whole-{method}.zarr", method))
                    for label, cluster_settings in (("1 worker", one), ("2 workers", two)):
                        output = folder / f"{method}-{label[0]}-{repeat}.ome.zarr"
                        runs[label].append(timed(segment, probabilities, output,
                                                 **settings(cluster_settings, method=method)))
                best = {label: min(values) for label, values in runs.items()}
                print(f"  {method}: single process {voxels / best['whole'] / 1e6:.2f} Mvoxel/s, blockwise 1 worker "
                      f"{voxels / best['1 worker'] / 1e6:.2f}, 2 workers {voxels / best['2 workers'] / 1e6:.2f}")
                print(f"    ratio 1 worker / single process: {best['whole'] / best['1 worker']:.2f} (goal >= 0.8); "
                      f"2 workers / single process: {best['whole'] / best['2 workers']:.2f} (goal >= 1.6)")
                seconds[method] = best["2 workers"]
            output = folder / "agglomerate-2-0.ome.zarr"
            evaluation = min(timed(evaluate, output, probabilities, labels, folder / f"metrics-{r}.json",
                                   **evaluate_settings(two)) for r in range(repeats))
    print(f"[evaluate] 2 workers, warping error on: {voxels / evaluation / 1e6:.2f} Mvoxel/s; ratio to segment "
          f"(agglomerate, 2 workers): {seconds['agglomerate'] / evaluation:.2f} (goal >= 1.0)")


def memory(folder: Path, quick: bool) -> None:
    small, large = ((2, 1024, 1024), (8, 1024, 1024)) if quick else ((4, 2048, 2048), (16, 2048, 2048))
    peaks = {}
    for name, shape in (("small", small), ("large", large)):
        probabilities, _ = make_volume(folder, f"memory-{name}", shape)
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
                PeakMemory() as meter:
            cluster_settings = {"kind": "address", "address": cluster.scheduler_address, "workers": 2,
                                "threads_per_worker": 1}
            segment(probabilities, folder / f"memory-{name}.ome.zarr", **settings(cluster_settings))
        peaks[name] = meter.peak
    print(f"[memory] segment (agglomerate), peak RSS of client + scheduler + 2 workers: {small} -> "
          f"{peaks['small'] / 2**20:.0f} MiB, {large} (4x) -> {peaks['large'] / 2**20:.0f} MiB")
    print(f"  ratio 4x volume / volume: {peaks['large'] / peaks['small']:.3f}  (goal < 1.2)")


def isbi(results: Path, folder: Path) -> None:
    probabilities, labels = results / "probabilities.ome.zarr", results / "labels.ome.zarr"
    folds = ([16, 18], [18, 20]), ([18, 20], [16, 18])  # (tune on, score on)
    methods = {"threshold + components": {"method": "components"},
               "watershed": {"method": "watershed", "seed_threshold": 0.9},
               **{f"agglomerate {name}": {"agglomeration": name, "merge_threshold": "auto",
                                          "merge_thresholds": SWEEP, "labels": str(labels)}
                  for name in ("mean_threshold", "multicut", "gasp")}}
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        cluster_settings = {"kind": "address", "address": cluster.scheduler_address, "workers": 2,
                            "threads_per_worker": 1}
        print("[isbi] validation sections 16-19, 2-fold cross-validated parameters; Rand error, information error")
        errors, best_threshold = {}, []
        for name, changes in methods.items():
            totals = []
            for tune, score in folds:
                output = folder / f"isbi-{name}-{tune[0]}.ome.zarr"
                chosen = segment(probabilities, output, **settings(cluster_settings, tune_sections=tune, **changes))
                result = evaluate(output, probabilities, labels, folder / f"isbi-{name}-{tune[0]}.json",
                                  **evaluate_settings(cluster_settings, sections=score, warping=False,
                                                      thresholds=SWEEP))
                totals.append((result, chosen.get("tuning", {}).get("merge_threshold")))
            errors[name] = np.mean([r["model"]["rand_error"] for r, _ in totals])
            best_threshold = [r["model"]["rand_error_best_threshold"] for r, _ in totals]  # the same for every method
            info = np.mean([r["model"]["info_error"] for r, _ in totals])
            chosen = [t for _, t in totals if t is not None]
            print(f"  {name:<32} {errors[name]:.4f}  {info:.4f}" + (f"  (merge thresholds {chosen})" if chosen else ""))
        oracle = np.mean(best_threshold)
        print(f"  {'best single threshold + components':<32} {oracle:.4f}  (threshold chosen on the scored sections)")
        best = min((v, k) for k, v in errors.items() if k.startswith("agglomerate"))
        print(f"  best agglomeration ({best[1]}) / best threshold + components: {best[0] / oracle:.2f} (goal <= 0.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--isbi", type=Path, help="folder of the ISBI volume of a config/isbi2012.yaml run "
                                                  "(results/isbi2012/volumes/isbi: probabilities, labels); "
                                                  "without it the ISBI part is skipped")
    parser.add_argument("--only", choices=["throughput", "memory", "isbi"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if args.only in (None, "throughput"):
            throughput(folder, args.quick)
        if args.only in (None, "memory"):
            memory(folder, args.quick)
        if args.only in (None, "isbi"):
            if args.isbi and (args.isbi / "probabilities.ome.zarr").exists():
                isbi(args.isbi, folder)
            else:
                print("[isbi] skipped: pass --isbi with the results folder of a config/isbi2012.yaml run")


if __name__ == "__main__":
    main()
