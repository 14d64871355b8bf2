"""Killed runs resume (SIGKILL of real processes): only missing blocks are computed, and the result is identical."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import tifffile
from conftest import COMPRESSION, dask_worker_processes, kill_process_group, predict_settings, write_image
from test_predict import run_predict
from test_pyramid import assert_pyramid_equals

from unet_pipeline.distributed import records
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.synth import synthetic_volume
from unet_pipeline.stages.weights import weights
from unet_pipeline.storage import ome_zarr, outputs


def recorded_blocks(output) -> int:
    folder = outputs.partial_path(output) / records.RECORDS
    return len(records.finished_blocks(outputs.partial_path(output))) if folder.exists() else 0


def stage_command(stage: str, *paths, **stage_settings) -> list[str]:
    return [sys.executable, "-m", "unet_pipeline.cli", stage, *map(str, paths), "--settings",
            json.dumps(stage_settings)]


def kill_after(command: list[str], output, blocks: int) -> int:
    """Run a stage in a real process (with any workers it starts), SIGKILL the lot once `blocks` are recorded."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while recorded_blocks(output) < blocks:
        assert process.poll() is None, f"{command[3]} finished before it could be killed: make the test volume larger"
        assert time.monotonic() < deadline, f"{command[3]} made no progress"
        time.sleep(0.01)
    kill_process_group(process)
    return recorded_blocks(output)


def start_and_kill(image, checkpoint, output, after_tiles: int) -> int:
    command = stage_command("predict", image, checkpoint, output, **predict_settings(workers=2))
    return kill_after(command, output, after_tiles)


def image_of_256_tiles(tmp_path, seed: int):
    volume = np.random.default_rng(seed).random((16, 128, 128)).astype(np.float32)
    return write_image(tmp_path / "norm.ome.zarr", volume, (1, 32, 32))


def uninterrupted(image, checkpoint, tmp_path) -> np.ndarray:
    run_predict(image, checkpoint, tmp_path / "reference.ome.zarr", workers=1, tile=[1, 32, 32])
    return ome_zarr.open_image(tmp_path / "reference.ome.zarr")[:]


def test_sigkill_then_rerun_computes_only_missing_tiles(tmp_path, random_checkpoint):
    image = image_of_256_tiles(tmp_path, 0)
    checkpoint = random_checkpoint(depth=2, base_features=8)
    reference = uninterrupted(image, checkpoint, tmp_path)

    output = tmp_path / "killed.ome.zarr"
    done_before = start_and_kill(image, checkpoint, output, after_tiles=10)
    assert not output.exists() and 10 <= done_before < 256
    stats = run_predict(image, checkpoint, output, workers=2, tile=[1, 32, 32])
    assert stats == {"tiles": 256, "computed": 256 - done_before, "resumed": done_before, "skipped": 0}
    assert np.array_equal(ome_zarr.open_image(output)[:], reference)


def test_records_of_another_model_are_not_trusted(tmp_path, random_checkpoint):
    image = image_of_256_tiles(tmp_path, 1)
    old, new = random_checkpoint(depth=2, base_features=8, seed=1), random_checkpoint(depth=2, base_features=8, seed=2)
    output = tmp_path / "p.ome.zarr"
    assert start_and_kill(image, old, output, after_tiles=10) >= 10
    stats = run_predict(image, new, output, workers=2, tile=[1, 32, 32])
    assert stats["computed"] == 256 and stats["resumed"] == 0
    assert np.array_equal(ome_zarr.open_image(output)[:], uninterrupted(image, new, tmp_path))


def test_a_killed_worker_has_its_tiles_rescheduled(tmp_path, random_checkpoint):
    image = image_of_256_tiles(tmp_path, 2)
    checkpoint = random_checkpoint(depth=2, base_features=8)
    reference = uninterrupted(image, checkpoint, tmp_path)
    output = tmp_path / "p.ome.zarr"
    killed = []

    def kill_one_worker():
        while recorded_blocks(output) < 20:
            time.sleep(0.02)
        worker = dask_worker_processes(psutil.Process())[0]  # a Dask worker, not multiprocessing's resource tracker
        worker.send_signal(signal.SIGKILL)
        killed.append(worker)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    stats = run_predict(image, checkpoint, output, workers=2, tile=[1, 32, 32])
    killer.join(timeout=10)
    assert killed, "no worker was killed"
    assert not killed[0].is_running()  # that worker died of the kill
    assert stats["tiles"] == 256
    assert np.array_equal(ome_zarr.open_image(output)[:], reference)


def test_a_complete_output_of_the_same_run_is_kept_and_any_change_recomputes(tmp_path, random_checkpoint):
    image = write_image(tmp_path / "norm.ome.zarr", np.random.default_rng(3).random((2, 64, 64), np.float32),
                        (1, 32, 32))
    checkpoint = random_checkpoint(depth=2)
    output = tmp_path / "p.ome.zarr"
    assert run_predict(image, checkpoint, output)["computed"] == 8
    first = ome_zarr.open_image(output)[:]
    assert run_predict(image, checkpoint, output) == {"tiles": 8, "computed": 0, "resumed": 8, "skipped": 0}
    assert np.array_equal(ome_zarr.open_image(output)[:], first)
    assert run_predict(image, checkpoint, output, tta=True)["computed"] == 8


def tiff_stack(tmp_path, sections: int, seed: int) -> tuple[np.ndarray, dict]:
    """A random uint8 TIFF stack of 64 x 64 sections at tmp_path/stack.tif, and ingest settings for it."""
    volume = np.random.default_rng(seed).integers(0, 256, size=(sections, 64, 64)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", volume)
    return volume, dict(chunks=[1, 32, 32], compression=COMPRESSION, voxel_size=[50.0, 4.0, 4.0], unit="nanometer",
                        shards=None, ngff="0.4", pyramid=True, missing_chunks="refuse", in_place=True, roi=None,
                        label_mask=None, ignore_label=None, mask_of=None)


def test_a_killed_ingest_resumes_at_the_first_missing_slab(tmp_path):
    volume, options = tiff_stack(tmp_path, 600, seed=4)
    output = tmp_path / "raw.ome.zarr"
    done_before = kill_after(stage_command("ingest", "raw", tmp_path / "stack.tif", output, **options), output, 50)
    assert not output.exists() and 50 <= done_before < 600
    assert ingest("raw", tmp_path / "stack.tif", output, **options) == {
        "blocks": 600, "computed": 600 - done_before, "resumed": done_before}
    assert_pyramid_equals(output, volume, (50.0, 4.0, 4.0), (1, 32, 32), "mean")  # every level, not only 0


def test_an_ingest_killed_while_it_builds_the_pyramid_keeps_every_slab(tmp_path):
    """The records outlive the last step (the levels that halve z, built after every slab is written)."""
    volume, options = tiff_stack(tmp_path, 400, seed=6)
    output = tmp_path / "raw.ome.zarr"
    process = subprocess.Popen(stage_command("ingest", "raw", tmp_path / "stack.tif", output, **options),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first_z_level = outputs.partial_path(output) / "2"  # level 1 halves y and x only, with the slabs; level 2 halves z
    while process.poll() is None and not first_z_level.exists():
        time.sleep(0.002)
    kill_process_group(process)
    assert process.returncode == -signal.SIGKILL, "ingest finished before it could be killed"
    assert ingest("raw", tmp_path / "stack.tif", output, **options) == {"blocks": 400, "computed": 0, "resumed": 400}
    assert_pyramid_equals(output, volume, (50.0, 4.0, 4.0), (1, 32, 32), "mean")


def test_a_killed_weights_run_resumes_and_equals_an_uninterrupted_one(tmp_path):
    _, labels = synthetic_volume((240, 128, 128), seed=5)
    image = write_image(tmp_path / "labels.ome.zarr", labels, (2, 128, 128))
    options = dict(w0=10.0, sigma=5.0, class_balance="balanced", mode="2d", tolerance=1e-3, compression=COMPRESSION,
                   ignore_label=None)
    weights(image, tmp_path / "reference.ome.zarr", **options)
    output = tmp_path / "weights.ome.zarr"
    done_before = kill_after(stage_command("weights", image, output, **options), output, 5)
    assert not output.exists() and 5 <= done_before < 120
    assert weights(image, output, **options) == {"blocks": 120, "computed": 120 - done_before, "resumed": done_before}
    assert np.array_equal(ome_zarr.open_image(output)[:], ome_zarr.open_image(tmp_path / "reference.ome.zarr")[:])


def test_rerunning_a_slab_stage_on_its_complete_output_keeps_every_slab(tmp_path):
    volume = np.random.default_rng(7).integers(0, 256, size=(5, 32, 32)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", volume)
    options = dict(chunks=[1, 16, 16], compression=COMPRESSION, voxel_size=[50.0, 4.0, 4.0], unit="nanometer",
                   shards=[2, 32, 32], ngff="0.5")
    first = ingest("raw", tmp_path / "stack.tif", tmp_path / "raw.ome.zarr", **options)
    assert first == {"blocks": 3, "computed": 3, "resumed": 0}  # slabs are whole shards
    assert ingest("raw", tmp_path / "stack.tif", tmp_path / "raw.ome.zarr", **options) == {
        "blocks": 3, "computed": 0, "resumed": 3}


def chunk_files(image) -> dict[str, bytes]:
    """Every stored chunk of an image, all pyramid levels, by path: byte-identical outputs have equal maps."""
    return {str(path.relative_to(image)): path.read_bytes() for path in sorted(image.rglob("*"))
            if path.is_file() and not path.name.startswith((".z", "zarr.json"))}


def test_sigkill_of_segment_then_rerun_computes_only_missing_blocks(tmp_path, dask_cluster):
    from conftest import probability_image, segment_settings
    from test_segment import cells_probability

    from unet_pipeline.stages.segment import segment

    probability = probability_image(tmp_path / "p.ome.zarr", cells_probability((4, 128, 128), 6), (1, 32, 32),
                                    np.float16)
    settings = segment_settings({"kind": "local", "workers": 1, "threads_per_worker": 1, "address": None},
                                block=[1, 32, 32], context=[0, 32, 32])
    reference = segment(probability, tmp_path / "reference.ome.zarr", **{**settings, "cluster_settings": dask_cluster})
    assert reference["blocks"] == 64 and reference["computed"] == 4 * 64  # fragments, edges, segments, relabel

    output = tmp_path / "killed.ome.zarr"
    done_before = kill_after(stage_command("segment", probability, output, **settings), output, blocks=64 + 5)
    assert not output.exists() and 64 + 5 <= done_before < 4 * 64  # killed in the edges phase or later
    stats = segment(probability, output, **{**settings, "cluster_settings": dask_cluster})
    assert stats == {**reference, "computed": 4 * 64 - done_before}
    assert chunk_files(output) == chunk_files(tmp_path / "reference.ome.zarr")
