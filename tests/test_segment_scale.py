"""A section larger than the memory cap segments and evaluates under that cap (blockwise, real processes)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import zarr
from conftest import COMPRESSION, REPO, evaluate_settings, same_partition, segment_settings

from unet_pipeline.storage import ome_zarr

SIDE, CELL, CAP_MB = 12288, 96, 550  # one section of 151 Mpx: its float16 probabilities alone exceed the cap


def grid_labels(rows: slice) -> np.ndarray:
    """Square cells of CELL px with 4-px membranes (0), cell = 255, for the given rows of the section."""
    y = np.arange(rows.start, rows.stop)[:, None] % CELL
    x = np.arange(SIDE)[None, :] % CELL
    return np.where((y >= 4) & (x >= 4), 255, 0).astype(np.uint8)


def write_section(tmp_path) -> tuple:
    """Probabilities (float16, cell = 0.9 inside cells, 0.1 on membrane) and labels, written in row slabs."""
    shape, chunks = (1, SIDE, SIDE), (1, 1024, 1024)
    probabilities = ome_zarr.create_image(tmp_path / "p.ome.zarr", shape, np.float16, chunks, COMPRESSION, (50, 4, 4),
                                    "nanometer", "p", channels=2, pyramid=False)
    labels = ome_zarr.create_image(tmp_path / "labels.ome.zarr", shape, np.uint8, chunks, COMPRESSION, (50, 4, 4),
                             "nanometer", "labels", labels=True, pyramid=False)
    for start in range(0, SIDE, 1024):
        rows = slice(start, start + 1024)
        cell = grid_labels(rows)
        p = np.where(cell > 0, 0.9, 0.1).astype(np.float16)
        probabilities[:, 0, rows] = np.stack([1 - p, p])
        labels[0, rows] = cell
    assert probabilities.nbytes > CAP_MB << 20
    return tmp_path / "p.ome.zarr", tmp_path / "labels.ome.zarr"


def test_a_section_larger_than_the_memory_cap_segments_and_evaluates_exactly(tmp_path):
    probabilities, labels = write_section(tmp_path)
    cluster = {"kind": "local", "workers": 2, "threads_per_worker": 1}
    segment_args = segment_settings(cluster, method="components", block=[1, 1024, 1024], context=[0, 64, 64])
    evaluate_args = evaluate_settings(cluster, thresholds=[0.5], block=[1, 1024, 1024], context=[0, 64, 64])
    script = (
        "import json, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_DATA, ({CAP_MB << 20}, {CAP_MB << 20}))\n"
        "from unet_pipeline.stages.segment import segment\n"
        "from unet_pipeline.stages.evaluate import evaluate\n"
        "if __name__ == '__main__':\n"
        "    probabilities, labels, output, metrics, segment_args, evaluate_args = sys.argv[1:]\n"
        "    segment(probabilities, output, **json.loads(segment_args))\n"
        "    evaluate(output, probabilities, labels, metrics, **json.loads(evaluate_args))\n")
    output, metrics = tmp_path / "segmentation.ome.zarr", tmp_path / "metrics.json"
    # thread stacks count as data: 1 MiB stacks (inherited by the workers) leave the cap to the arrays
    result = subprocess.run(["bash", "-c", 'ulimit -s 1024 && exec "$@"', "capped", sys.executable, "-c", script,
                             str(probabilities), str(labels), str(output), str(metrics),
                             json.dumps(segment_args), json.dumps(evaluate_args)],
                            capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    segmentation = zarr.open_array(str(output / "0"), mode="r")
    cells_per_side = SIDE // CELL
    assert json.loads(metrics.read_text())["model"]["rand_error"] == 0
    assert json.loads(metrics.read_text())["model"]["pixel_error"] == 0
    assert ome_zarr.image_attrs(output)["provenance"]["blocks"]["segments"] == cells_per_side**2
    for start in (0, 5000, SIDE - 1024):  # each square cell is one segment
        rows = slice(start, start + 1024)
        y, x = np.arange(start, start + 1024)[:, None] // CELL, np.arange(SIDE)[None, :] // CELL
        assert same_partition(segmentation[0, rows], np.where(grid_labels(rows) > 0, y * cells_per_side + x + 1, 0))


def test_the_memory_cap_is_real():
    """The same cap makes holding the section's cell probability as float32 fail, so the test above could fail."""
    script = ("import resource, numpy\n"
              f"resource.setrlimit(resource.RLIMIT_DATA, ({CAP_MB << 20}, {CAP_MB << 20}))\n"
              f"numpy.ones((1, {SIDE}, {SIDE}), numpy.float32)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode != 0 and "MemoryError" in result.stderr
