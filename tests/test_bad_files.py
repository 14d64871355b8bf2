"""Damaged inputs, unwritable outputs and hand-written settings of the wrong type: exit 2 with a message that
names the file (or key), and nothing left at the output path that looks complete."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import COMPRESSION, predict_settings, probability_image, segment_settings, write_image
from test_segment import cells_probability

from unet_pipeline.stages.segment import segment
from unet_pipeline.storage import ome_zarr, outputs

WEIGHTS = {"w0": 10.0, "sigma": 5.0, "class_balance": "none", "mode": "2d", "tolerance": 1e-3,
           "compression": COMPRESSION, "ignore_label": None}
PREPROCESS = {"low_percentile": 0.5, "high_percentile": 99.5}
PREDICT = predict_settings()
INGEST = dict(chunks=[2, 16, 16], compression=COMPRESSION, voxel_size=[40.0, 4.0, 4.0], unit="nanometer",
              shards=None, ngff="0.4", pyramid=True, missing_chunks="refuse", in_place=True, roi=None,
              label_mask=None, ignore_label=None, mask_of=None)


def cli(stage: str, *paths, settings: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unet_pipeline.cli", stage, *map(str, paths),
                           "--settings", json.dumps(settings)], capture_output=True, text=True)


def labels_image(path: Path) -> Path:
    labels = np.full((2, 32, 32), 255, np.uint8)
    labels[:, 15:17] = 0
    return write_image(path, labels, (1, 16, 16))


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_checkpoint_is_named(tmp_path, random_checkpoint, damage):
    image = write_image(tmp_path / "norm.ome.zarr", np.zeros((1, 32, 32), np.float32), (1, 32, 32))
    checkpoint = random_checkpoint()
    content = checkpoint.read_bytes()
    checkpoint.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"")
    result = cli("predict", image, checkpoint, tmp_path / "p.ome.zarr", settings=PREDICT)
    assert result.returncode == 2, result.stderr
    assert f"{checkpoint}: the checkpoint cannot be read, it is truncated or damaged" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "p.ome.zarr").exists()


def test_a_corrupt_chunk_of_an_ingest_source_is_named(tmp_path):
    source = zarr.create_array(str(tmp_path / "source.zarr"), shape=(4, 32, 32), chunks=(2, 16, 16), dtype=np.uint8,
                               zarr_format=2)
    source[:] = 7
    (tmp_path / "source.zarr" / "1.0.1").write_bytes(b"not blosc")
    copy = {**INGEST, "in_place": False}  # read in place, the stage that reads it names the file (test_in_place)
    result = cli("ingest", "raw", tmp_path / "source.zarr", tmp_path / "raw.ome.zarr", settings=copy)
    assert result.returncode == 2, result.stderr
    assert f"{tmp_path / 'source.zarr'}: chunk file 1.0.1 cannot be read" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "raw.ome.zarr").exists()


def test_a_corrupt_chunk_of_a_stage_input_is_named(tmp_path):
    raw = write_image(tmp_path / "raw.ome.zarr", np.arange(2 * 32 * 32, dtype=np.uint16).reshape(2, 32, 32),
                      (1, 16, 16))
    (raw / "0" / "1" / "0" / "1").write_bytes(b"\x02\x01garbage that is not a blosc frame")
    result = cli("preprocess", raw, tmp_path / "intensity.json", settings=PREPROCESS)
    assert result.returncode == 2, result.stderr
    assert f"{raw / '0'}: chunk file 1/0/1 cannot be read" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.glob("intensity.json*"))


def test_wrong_types_in_hand_written_settings_are_named_before_any_work(tmp_path):
    labels = labels_image(tmp_path / "labels.ome.zarr")
    output = tmp_path / "w.ome.zarr"
    result = cli("weights", labels, output, settings={**WEIGHTS, "w0": "10", "mode": 2})
    assert result.returncode == 2, result.stderr
    assert "wrong type of w0 = \"10\" (expected float); mode = 2 (expected Literal['2d', '3d'])" in result.stderr
    assert not output.exists() and not outputs.partial_path(output).exists()


@contextlib.contextmanager
def small_file_system(path: Path, options: str):
    """A real tmpfs mounted at `path` (needs root, as on the CI machine): skips where mounting is not allowed."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_read_only_output_location_is_named(tmp_path):
    labels = labels_image(tmp_path / "labels.ome.zarr")
    with small_file_system(tmp_path / "ro", "ro,size=1m") as folder:
        result = cli("weights", labels, folder / "w.ome.zarr", settings=WEIGHTS)
    assert result.returncode == 2, result.stderr
    assert f"{folder}" in result.stderr and "Read-only file system" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_full_disk_is_named_and_the_rerun_with_space_resumes(tmp_path):
    raw = write_image(tmp_path / "raw.ome.zarr", np.random.default_rng(0).integers(0, 65535, (16, 128, 128),
                                                                                    dtype=np.uint16), (1, 64, 64))
    with small_file_system(tmp_path / "small", "size=256k") as folder:
        output = folder / "copy.ome.zarr"
        copy = {**INGEST, "chunks": [1, 64, 64], "in_place": False}
        result = cli("ingest", "raw", raw, output, settings=copy)
        assert result.returncode == 2, result.stderr
        assert "No space left on device" in result.stderr and "copy.ome.zarr" in result.stderr
        assert "Traceback" not in result.stderr and not output.exists()
        subprocess.run(["mount", "-o", "remount,size=16m", str(folder)], check=True)
        rerun = cli("ingest", "raw", raw, output, settings=copy)
        assert rerun.returncode == 0, rerun.stderr
        assert ome_zarr.open_input(output).shape == (16, 128, 128)


def test_a_full_disk_during_segment_names_the_output_and_the_rerun_with_space_resumes(tmp_path):
    """The file system names no file when a write runs out of space: the one-line error names the output folder
    the block was writing in (not only the block), and the rerun, once there is room, finishes the same output."""
    probabilities = probability_image(tmp_path / "p.ome.zarr", cells_probability((4, 256, 256), 5), (1, 64, 64))
    settings = segment_settings({"kind": "local", "workers": 1, "threads_per_worker": 1}, block=[1, 128, 128],
                                context=[0, 32, 32])
    with small_file_system(tmp_path / "small", "size=256k") as folder:
        output = folder / "s.ome.zarr"
        result = cli("segment", probabilities, output, settings=settings)
        assert result.returncode == 2, result.stderr
        last = result.stderr.strip().splitlines()[-1]  # above it: the Dask workers' logs of each failed try
        assert last.startswith("unet-pipeline segment: error: ") and f"{output}.partial" in last, result.stderr
        assert "No space left on device" in last and not output.exists()
        subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)
        assert cli("segment", probabilities, output, settings=settings).returncode == 0
        segment(probabilities, tmp_path / "whole.ome.zarr", **settings)
        assert np.array_equal(ome_zarr.open_input(output)[:], ome_zarr.open_input(tmp_path / "whole.ome.zarr")[:])


def test_an_output_under_a_regular_file_is_named(tmp_path):
    (tmp_path / "results").write_text("a file where a folder should be")
    result = cli("weights", labels_image(tmp_path / "labels.ome.zarr"), tmp_path / "results" / "w.ome.zarr",
                 settings=WEIGHTS)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{tmp_path / 'results'}: is a file, not a folder" in result.stderr
