"""Benchmark of overlap-tile inference, with its baselines measured in the same run.

1. Throughput: the pipeline (Zarr in, mirrored halos, model, Zarr out, Dask)
   divided by the bare model's forward throughput on tensors already in
   memory, on the same tiles with the same threads. Goal >= 0.9.
2. Scheduler overhead: wall time per tile with a trivial model over >= 10,000
   tiles, minus that model's own forward time. Goals <= 2 ms per tile at
   batch_tiles 1, <= 1 ms batched (16).
3. Peak memory (client plus workers) for a volume 4x larger than another.
   Goal < 1.2x.
4. Normalising on the fly: predict on uint8 raw with preprocess's intensity
   statistics (each tile normalised as it is read) against predict on a
   float32 copy normalised beforehand, same tiles. Goal >= 0.95.

    python benchmarks/predict.py            # the paper's 64-feature U-Net, 572 -> 388 tiles
    python benchmarks/predict.py --quick    # smaller network and volumes, for a smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from distributed import Client
from measure import PeakMemory

from unet_pipeline.core.geometry import plan_tiles, tile_shape
from unet_pipeline.core.intensity import normalise
from unet_pipeline.distributed.cluster import local_cluster
from unet_pipeline.nn.checkpoint import save_checkpoint
from unet_pipeline.nn.inference import forward_probabilities
from unet_pipeline.nn.model_config import ModelConfig
from unet_pipeline.nn.unet import UNet
from unet_pipeline.stages.predict import predict
from unet_pipeline.stages.preprocess import preprocess
from unet_pipeline.storage import ome_zarr

COMPRESSION = ome_zarr.DEFAULT_COMPRESSION


def make_image(folder: Path, name: str, shape: tuple[int, int, int], chunks: tuple[int, int, int]) -> Path:
    path = folder / f"{name}.ome.zarr"
    volume = np.random.default_rng(0).random(shape, dtype=np.float32)
    ome_zarr.create_image(path, shape, np.float32, chunks, COMPRESSION, (50, 4, 4), "nanometer", name)[:] = volume
    return path


def make_checkpoint(folder: Path, config: ModelConfig) -> Path:
    torch.manual_seed(0)
    path = folder / f"model-{config.depth}-{config.base_features}.pt"
    save_checkpoint(path, UNet(config))
    return path


def run_pipeline(image: Path, checkpoint: Path, output: Path, tile: list[int], client: Client, torch_threads: int,
                 batch_tiles: int = 1, intensity: Path | None = None) -> float:
    start = time.perf_counter()
    predict(image, checkpoint, output, tile=tile, batch_tiles=batch_tiles, memory_budget_mb=4096, dtype="float16",
            amp="none", tta=False, device="cpu", torch_threads=torch_threads, stall_timeout_s=3600,
            compression=COMPRESSION, intensity=str(intensity) if intensity else None,
            cluster_settings={"kind": "address", "workers": 1, "threads_per_worker": 1,
                              "address": client.scheduler.address})
    return time.perf_counter() - start


def bare_forward(config: ModelConfig, image: Path, tile: list[int], threads: int) -> tuple[float, int]:
    """Seconds of the bare model over the same tiles' inputs, already in memory as tensors."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = UNet(config).eval()
    array = ome_zarr.open_image(image)
    tiles = plan_tiles(config.geometry, array.shape, tile_shape(config.geometry, array.chunks, tuple(tile)))
    inputs = [np.random.default_rng(1).random(t.input.shape, dtype=np.float32) for t in tiles]
    forward_probabilities(model, inputs[0], tiles[0].network_output[1:])  # warm-up
    start = time.perf_counter()
    for block, t in zip(inputs, tiles):
        forward_probabilities(model, block, t.network_output[1:])
    return time.perf_counter() - start, len(tiles)


def throughput(folder: Path, quick: bool, repeats: int = 2) -> None:
    config = ModelConfig(depth=2, base_features=16) if quick else ModelConfig(depth=4, base_features=64)
    edge = 96 if quick else 384  # output tile edge; the paper's 388 rounded down to the stride (16)
    sections = 2
    image = make_image(folder, "throughput", (sections, 2 * edge, 2 * edge), (1, edge, edge))
    checkpoint = make_checkpoint(folder, config)
    tile = [1, edge, edge]
    out_px = sections * (2 * edge) ** 2
    bare, pipeline = [], []
    with local_cluster(1, 1, torch_threads=2) as cluster, Client(cluster) as client:
        client.wait_for_workers(1)
        run_pipeline(image, checkpoint, folder / "warm.ome.zarr", tile, client, 2)  # loads the model once
        for repeat in range(repeats):  # interleaved, best of each: this machine is noisy
            seconds, n_tiles = bare_forward(config, image, tile, threads=2)
            bare.append(seconds)
            pipeline.append(run_pipeline(image, checkpoint, folder / f"out{repeat}.ome.zarr", tile, client, 2))
    network_px = n_tiles * config.geometry.smallest_output_at_least(edge) ** 2
    print(f"[throughput] model depth {config.depth}, {config.base_features} features, tiles "
          f"{config.geometry.input_size(config.geometry.smallest_output_at_least(edge))} -> "
          f"{config.geometry.smallest_output_at_least(edge)} px, {n_tiles} tiles, 2 torch threads, "
          f"best of {repeats}")
    print(f"  bare forward: {network_px / min(bare) / 1e6:.4f} Mpx/s network output "
          f"({out_px / min(bare) / 1e6:.4f} Mpx/s of the volume); runs {', '.join(f'{s:.1f}' for s in bare)} s")
    print(f"  pipeline:     {out_px / min(pipeline) / 1e6:.4f} Mpx/s of the volume written to Zarr; "
          f"runs {', '.join(f'{s:.1f}' for s in pipeline)} s (whole predict call: plan, checksums, Dask, Zarr)")
    print(f"  ratio pipeline / bare (same tiles, same volume pixels): {min(bare) / min(pipeline):.3f}  (goal >= 0.9)")


def overhead(folder: Path, quick: bool) -> None:
    config = ModelConfig(depth=1, base_features=1)
    sections = 4 if quick else 40
    image = make_image(folder, "overhead", (sections, 256, 256), (1, 16, 16))
    checkpoint = make_checkpoint(folder, config)
    bare_s, n_tiles = bare_forward(config, image, [1, 16, 16], threads=1)
    with local_cluster(2, 1) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        run_pipeline(image, checkpoint, folder / "warm-overhead.ome.zarr", [1, 16, 16], client, 1)
        results = {}
        for batch in (1, 16):
            results[batch] = run_pipeline(image, checkpoint, folder / f"overhead-{batch}.ome.zarr", [1, 16, 16],
                                          client, 1, batch_tiles=batch)
    print(f"[overhead] trivial model (depth 1, 1 feature), {n_tiles} tiles of 16 x 16, 2 workers")
    print(f"  bare forward of that model: {bare_s / n_tiles * 1e3:.3f} ms per tile")
    for batch, seconds in results.items():
        per_tile = (seconds - bare_s / 2) / n_tiles * 1e3
        print(f"  batch_tiles={batch:>2}: {seconds:.1f} s, scheduler + I/O overhead {per_tile:.2f} ms per tile "
              f"(goal <= {2 if batch == 1 else 1})")


def memory(folder: Path, quick: bool) -> None:
    config = ModelConfig(depth=2, base_features=8)
    checkpoint = make_checkpoint(folder, config)
    small, large = ((4, 256, 256), (16, 256, 256)) if quick else ((8, 512, 512), (32, 512, 512))
    peaks = {}
    for name, shape in (("small", small), ("large", large)):
        image = make_image(folder, f"memory-{name}", shape, (1, 128, 128))
        with local_cluster(2, 1) as cluster, Client(cluster) as client, PeakMemory() as meter:
            client.wait_for_workers(2)
            run_pipeline(image, checkpoint, folder / f"memory-{name}-out.ome.zarr", [1, 128, 128], client, 1)
        peaks[name] = meter.peak
    print(f"[memory] peak RSS of client + scheduler + 2 workers: {small} -> {peaks['small'] / 2**20:.0f} MiB, "
          f"{large} (4x) -> {peaks['large'] / 2**20:.0f} MiB")
    print(f"  ratio 4x volume / volume: {peaks['large'] / peaks['small']:.3f}  (goal < 1.2)")


def normalisation(folder: Path, quick: bool, repeats: int = 3) -> None:
    config = ModelConfig(depth=2, base_features=8)
    checkpoint = make_checkpoint(folder, config)
    shape = (4, 256, 256) if quick else (16, 512, 512)
    raw = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    raw_image = folder / "normalise-raw.ome.zarr"
    ome_zarr.create_image(raw_image, shape, np.uint8, (1, 128, 128), COMPRESSION, (50, 4, 4), "nanometer",
                          "raw")[:] = raw
    statistics = folder / "normalise-intensity.json"
    found = preprocess(raw_image, statistics, low_percentile=0.5, high_percentile=99.5)
    low, high = found["low"], found["high"]
    copy = folder / "normalise-copy.ome.zarr"
    ome_zarr.create_image(copy, shape, np.float32, (1, 128, 128), COMPRESSION, (50, 4, 4), "nanometer",
                          "copy")[:] = normalise(raw, low, high)
    on_the_fly, precomputed = [], []
    with local_cluster(2, 1) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        run_pipeline(copy, checkpoint, folder / "normalise-warm.ome.zarr", [1, 128, 128], client, 1)
        for repeat in range(repeats):  # interleaved, best of each: this machine is noisy
            on_the_fly.append(run_pipeline(raw_image, checkpoint, folder / f"fly-{repeat}.ome.zarr", [1, 128, 128],
                                           client, 1, intensity=statistics))
            precomputed.append(run_pipeline(copy, checkpoint, folder / f"copy-{repeat}.ome.zarr", [1, 128, 128],
                                            client, 1))
    same = np.array_equal(ome_zarr.open_image(folder / "fly-0.ome.zarr")[:],
                          ome_zarr.open_image(folder / "copy-0.ome.zarr")[:])
    print(f"[normalisation] {shape} uint8, tiles of 128 x 128, 2 workers, best of {repeats}; outputs identical: {same}")
    print(f"  on the fly (uint8 + intensity.json): runs {', '.join(f'{s:.2f}' for s in on_the_fly)} s")
    print(f"  float32 copy read as it is:          runs {', '.join(f'{s:.2f}' for s in precomputed)} s")
    print(f"  ratio throughput on the fly / copy: {min(precomputed) / min(on_the_fly):.3f}  (goal >= 0.95)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--only", choices=["throughput", "overhead", "memory", "normalisation"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, bench in (("throughput", throughput), ("overhead", overhead), ("memory", memory),
                            ("normalisation", normalisation)):
            if args.only in (None, name):
                bench(Path(tmp), args.quick)


if __name__ == "__main__":
    main()
