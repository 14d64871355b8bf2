"""Benchmark: the time per block of segment's edges phase as the block grid grows.

Each block of the edges phase reads its fragments with a one-voxel margin,
lists its contacts and stitches its pieces with the next block along each
axis. That neighbour is made from its grid position alone; it used to be
looked up in a rebuilt grid, which made the phase quadratic in the number of
blocks. Here the same cell probabilities per block (a smooth random field)
are cut into grids of about 10^2, 10^3 and 10^4 blocks of 1 x 16 x 16 voxels.
The fragments phase runs first, then the edges phase is timed, on a local
cluster of 2 workers. Goal: time per block flat within 1.5x of the
10^2-block grid.

    python benchmarks/edges.py
    python benchmarks/edges.py --sides 10 32    # smaller grids, for a smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster
from scipy import ndimage

from unet_pipeline.distributed.blockwise import Runner, Work
from unet_pipeline.segmentation.settings import Settings
from unet_pipeline.stages.segment import FRAGMENTS, edge_block, fragment_block
from unet_pipeline.storage import ome_zarr

BLOCK = (1, 16, 16)
CONTEXT = (0, 8, 8)
COMPRESSION = ome_zarr.DEFAULT_COMPRESSION
SETTINGS = Settings.of(method="agglomerate", mode="2d", connectivity=None, threshold=0.5, seed_threshold=0.9,
                       seed_distance=4, agglomeration="mean_threshold", merge_threshold=0.5, merge_thresholds=[0.5],
                       tune_sections=None, min_size=0)


def probabilities(path: Path, side: int) -> Path:
    """A (2, 1, 16 side, 16 side) probability image of smooth random cells, chunked as the blocks."""
    shape = (1, BLOCK[1] * side, BLOCK[2] * side)
    field = ndimage.gaussian_filter(np.random.default_rng(0).random(shape), (0, 3, 3))
    cell = ((field - field.min()) / np.ptp(field)).astype(np.float32)
    image = ome_zarr.create_image(path, shape, np.float32, BLOCK, COMPRESSION, (50.0, 4.0, 4.0), "nanometer", "p",
                                  channels=2)
    image[:] = np.stack([1 - cell, cell])
    return path


def edges_seconds_per_block(client: Client, root: Path, side: int) -> tuple[int, float]:
    """(blocks, seconds per block of the edges phase) for a grid of side x side blocks."""
    image = str(probabilities(root / "p.ome.zarr", side))
    work = Work(str(root / "work"), (1, BLOCK[1] * side, BLOCK[2] * side), BLOCK, CONTEXT, f"edges-{side}")
    runner = Runner(client, work, stall_timeout_s=3600)
    work.ensure_scratch(FRAGMENTS, BLOCK)
    runner.phase(FRAGMENTS, fragment_block, probabilities=image, settings=SETTINGS, voxel_size=(50.0, 4.0, 4.0))
    started = time.perf_counter()
    runner.phase("edges", edge_block, probabilities=image, settings=SETTINGS)
    blocks = len(work.grid)
    return blocks, (time.perf_counter() - started) / blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[10, 32, 100], help="blocks per grid side")
    args = parser.parse_args()
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client, tempfile.TemporaryDirectory() as scratch:
        for side in args.sides:
            rows.append(edges_seconds_per_block(client, Path(scratch) / str(side), side))
    print("| blocks | edges phase, ms per block | ratio to the first grid |")
    print("|---|---|---|")
    for blocks, seconds in rows:
        print(f"| {blocks} | {1000 * seconds:.2f} | {seconds / rows[0][1]:.2f} |")


if __name__ == "__main__":
    main()
