"""Benchmark of ingest and of our chunked writer against a plain zarr-python copy, in one run.

Both sides copy the same data into arrays with the same chunks and codec
(Blosc zstd level 5, bit shuffle), slab by slab so memory stays bounded:

- ingest: a multi-page TIFF stack -> OME-Zarr. Baseline: tifffile's Zarr view
  of the stack copied slab by slab into a zarr-python array. Ours:
  `unet_pipeline.stages.ingest.ingest` (checks, per-slab completion records, two
  Dask threads), with `storage.pyramid` off (the same bytes as the
  baseline) and on (also the multiscale levels).
- write: a float32 volume already in memory -> OME-Zarr. Baseline: slab
  assignments into a zarr-python array. Ours: `records.store_slabs` into a
  resumable image (records and threads included), pyramid off and on.

The data is the package's synthetic EM-like volume (realistic compression;
an 8 x 512 x 512 block tiled to the shape, as generating it is slow).
Runs alternate (baseline, ours) and the best of `--repeats` counts. Goal:
ours / baseline throughput >= 0.8.

    python benchmarks/ome_zarr.py [--shape 32,2048,2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import dask.array as da
import numpy as np
import tifffile
import zarr

from unet_pipeline.distributed import records
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.synth import synthetic_volume
from unet_pipeline.storage import ome_zarr

COMPRESSION = ome_zarr.DEFAULT_COMPRESSION
VOXEL = [50.0, 4.0, 4.0]


def plain_copy(source: zarr.Array | np.ndarray, target_path: Path, chunks: tuple[int, ...]) -> None:
    """The baseline: a zarr-python array with the same chunks and codec, filled slab by slab."""
    target = zarr.create_array(str(target_path), shape=source.shape, chunks=chunks, dtype=source.dtype,
                               compressors=ome_zarr.make_compressor(COMPRESSION), zarr_format=2, fill_value=0,
                               chunk_key_encoding={"name": "v2", "separator": "/"})
    for z in range(0, source.shape[0], chunks[0]):
        target[z : z + chunks[0]] = source[z : z + chunks[0]]


def our_ingest(stack: Path, target_path: Path, chunks: tuple[int, ...], pyramid: bool) -> None:
    ingest("raw", stack, target_path, chunks=chunks, compression=COMPRESSION, voxel_size=VOXEL, unit="nanometer",
           pyramid=pyramid)


def stored_bytes(path: Path) -> tuple[int, int]:
    """Bytes on disk of level 0 and of the whole image (all levels)."""
    sizes = {p: p.stat().st_size for p in path.rglob("*") if p.is_file()}
    return sum(n for p, n in sizes.items() if p.relative_to(path).parts[0] == "0"), sum(sizes.values())


def our_write(volume: da.Array, target_path: Path, chunks: tuple[int, ...], pyramid: bool) -> None:
    def create(partial: Path) -> zarr.Array:
        return ome_zarr.create_image(partial, volume.shape, volume.dtype, chunks, COMPRESSION, VOXEL, "nanometer",
                                     "written", pyramid=pyramid)

    with records.resumable_image(target_path, "benchmark", create) as target:
        records.store_slabs(volume, target, "write")


def best_seconds(runs: list[Callable[[Path], None]], folder: Path, repeats: int) -> list[float]:
    """Best wall time of each run, alternating them `repeats` times, on fresh output paths."""
    best = [float("inf")] * len(runs)
    for repeat in range(repeats):
        for index, run in enumerate(runs):
            target = folder / f"out-{index}-{repeat}.zarr"
            started = time.perf_counter()
            run(target)
            best[index] = min(best[index], time.perf_counter() - started)
            shutil.rmtree(target)
            for leftover in folder.glob(f"out-{index}-{repeat}.zarr*"):  # the lock file
                leftover.unlink()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="32,2048,2048")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    chunks = (1, 512, 512)
    tile = (min(8, shape[0]), min(512, shape[1]), min(512, shape[2]))
    raw = np.tile(synthetic_volume(tile, seed=0)[0], [-(-n // t) for n, t in zip(shape, tile)])
    raw = np.ascontiguousarray(raw[: shape[0], : shape[1], : shape[2]])
    megabytes = raw.nbytes / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stack = folder / "stack.tif"
        tifffile.imwrite(stack, raw, photometric="minisblack")
        tiff_view = zarr.open(tifffile.imread(stack, aszarr=True), mode="r")
        plain, level0_only, with_pyramid = best_seconds([
            lambda out: plain_copy(tiff_view, out, chunks),
            lambda out: our_ingest(stack, out, chunks, pyramid=False),
            lambda out: our_ingest(stack, out, chunks, pyramid=True),
        ], folder, args.repeats)
        our_ingest(stack, folder / "sample.ome.zarr", chunks, pyramid=True)
        level0, total = stored_bytes(folder / "sample.ome.zarr")
        print(f"ingest of a {shape} uint8 TIFF stack ({megabytes:.0f} MB), chunks {chunks}, best of {args.repeats}:")
        print(f"  plain zarr copy          {plain:6.2f} s  {megabytes / plain:7.1f} MB/s")
        print(f"  ingest, pyramid off      {level0_only:6.2f} s  {megabytes / level0_only:7.1f} MB/s  "
              f"ratio {plain / level0_only:.2f}  (the same bytes as the baseline)")
        print(f"  ingest, pyramid on       {with_pyramid:6.2f} s  {megabytes / with_pyramid:7.1f} MB/s  "
              f"ratio {plain / with_pyramid:.2f}  (writes {total / level0:.2f}x level 0's bytes)")

        volume = raw.astype(np.float32) / 255
        lazy = da.from_array(volume, chunks=(chunks[0], -1, -1), name=False)  # Dask copies it: not timed
        plain, level0_only, with_pyramid = best_seconds([
            lambda out: plain_copy(volume, out, chunks),
            lambda out: our_write(lazy, out, chunks, pyramid=False),
            lambda out: our_write(lazy, out, chunks, pyramid=True),
        ], folder, args.repeats)
        megabytes = volume.nbytes / 1e6
        print(f"write of a {shape} float32 volume ({megabytes:.0f} MB), with completion records:")
        print(f"  plain zarr write         {plain:6.2f} s  {megabytes / plain:7.1f} MB/s")
        print(f"  store_slabs, pyramid off {level0_only:6.2f} s  {megabytes / level0_only:7.1f} MB/s  "
              f"ratio {plain / level0_only:.2f}")
        print(f"  store_slabs, pyramid on  {with_pyramid:6.2f} s  {megabytes / with_pyramid:7.1f} MB/s  "
              f"ratio {plain / with_pyramid:.2f}")

if __name__ == "__main__":
    main()
