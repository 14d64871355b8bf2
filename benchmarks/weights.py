"""Benchmark of the weight map's separation-border term against the naive method, in one run.

Naive: one Euclidean distance transform per cell over the whole section
(tests/weights_reference.py). Ours: a compiled scan, per membrane pixel, of
the pixels around it nearest first, stopping at the second cell or at the
cutoff distance (unet_pipeline.stages.weights). Both on the
20 ISBI 2012 training sections, or on a synthetic volume of the same size and
cell density when the data is absent.

    python benchmarks/weights.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from weights_reference import naive_border_term  # noqa: E402

from unet_pipeline.segmentation.cells import separate_cells  # noqa: E402
from unet_pipeline.stages.synth import synthetic_volume  # noqa: E402
from unet_pipeline.stages.weights import border_term, weights  # noqa: E402
from unet_pipeline.storage import ome_zarr  # noqa: E402

ISBI = REPO.parent / "shared" / "data" / "isbi2012" / "train-labels.tif"
W0, SIGMA = 10.0, 5.0


def load_labels() -> tuple[np.ndarray, str]:
    if ISBI.exists():
        return tifffile.imread(ISBI), f"ISBI 2012 training labels {ISBI}"
    _, labels = synthetic_volume((20, 512, 512), seed=0, cell_diameter=44)
    return labels, "synthetic volume 20 x 512 x 512 (ISBI data not found)"


def main() -> None:
    labels, source = load_labels()
    cells = [separate_cells(section) for section in labels]
    print(f"{source}: {len(cells)} sections, {np.mean([c.max() for c in cells]):.0f} cells per section on average")

    start = time.perf_counter()
    naive = [naive_border_term(c, W0, SIGMA) for c in cells]
    naive_s = time.perf_counter() - start

    border_term(cells[0], W0, SIGMA)  # compile the kernel (cached on disk after the first run)
    start = time.perf_counter()
    fast = [border_term(c, W0, SIGMA) for c in cells]
    fast_s = time.perf_counter() - start
    error = max(float(np.abs(a - b).max()) for a, b in zip(fast, naive))
    cores = os.cpu_count() or 1
    with ThreadPoolExecutor(cores) as pool:  # the kernel releases the GIL, as in the stage's Dask threads
        start = time.perf_counter()
        list(pool.map(lambda c: border_term(c, W0, SIGMA), cells))
        parallel_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        source_image = Path(tmp) / "labels.ome.zarr"
        ome_zarr.create_image(source_image, labels.shape, labels.dtype, (1, 512, 512),
                        {"codec": "zstd", "level": 3}, (50, 4, 4), "nanometer", "labels")[:] = labels
        start = time.perf_counter()
        weights(source_image, Path(tmp) / "weights.ome.zarr", w0=W0, sigma=SIGMA, class_balance="balanced",
                mode="2d", tolerance=1e-3, compression={"codec": "zstd", "level": 3})
        stage_s = time.perf_counter() - start

    print(f"naive border term, serial:                 {naive_s:7.2f} s ({naive_s / len(cells) * 1e3:.0f} ms/section)")
    print(f"ours, serial:                              {fast_s:7.2f} s ({fast_s / len(cells) * 1e3:.1f} ms/section)"
          f"  ratio {naive_s / fast_s:.0f}x")
    print(f"ours, sections on {cores} threads:                {parallel_s:7.2f} s "
          f"({parallel_s / len(cells) * 1e3:.1f} ms/section)  ratio {naive_s / parallel_s:.0f}x  (goal >= 100x)")
    print(f"whole weights stage (Zarr in and out, cells, class balance, Dask threads): {stage_s:.2f} s"
          f"  ratio {naive_s / stage_s:.0f}x")
    print(f"max abs difference to naive: {error:.2e} (tolerance {1e-3 * W0:.0e} = 1e-3 * w0)")


if __name__ == "__main__":
    main()
