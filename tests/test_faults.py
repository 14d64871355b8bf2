"""Bad input and concurrent runs fail loudly, name what is wrong, and leave nothing that looks complete."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import torch
from conftest import COMPRESSION, dask_worker_processes, evaluate_settings, predict_settings, write_image
from test_predict import run_predict

from unet_pipeline.core.errors import InputError, OutputBusy
from unet_pipeline.distributed import records
from unet_pipeline.stages.weights import weights
from unet_pipeline.storage import ome_zarr, outputs


def hold_lock(output, seconds: float) -> subprocess.Popen:
    """Another process that holds `output`'s lock for `seconds`; returns once it holds it."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from unet_pipeline.storage import outputs\n"
        f"with outputs.output_lock({str(output)!r}):\n    print('held', flush=True); time.sleep({seconds})")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_not_stuck(tmp_path):
    output = tmp_path / "out.ome.zarr"
    holder = hold_lock(output, 60)
    with pytest.raises(OutputBusy, match=rf"out.ome.zarr: another run \(pid {holder.pid} on [^)]+\) is writing"):
        with outputs.atomic_output(output):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with outputs.atomic_output(output) as partial:  # the kernel dropped the dead run's lock
        partial.write_text("done")
    assert output.read_text() == "done" and not output.with_name("out.ome.zarr.lock").exists()


def test_cli_reports_a_busy_output_with_exit_code_2(tmp_path):
    labels = write_image(tmp_path / "labels.ome.zarr", np.eye(8, dtype=np.uint8)[None], (1, 8, 8))
    settings = {"w0": 10, "sigma": 5, "class_balance": "none", "mode": "2d", "tolerance": 1e-3,
                "compression": COMPRESSION, "ignore_label": None}
    holder = hold_lock(tmp_path / "w.ome.zarr", 60)
    try:
        result = subprocess.run([sys.executable, "-m", "unet_pipeline.cli", "weights", str(labels),
                                 str(tmp_path / "w.ome.zarr"), "--settings", json.dumps(settings)],
                                capture_output=True, text=True)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2 and "is writing this output" in result.stderr


@pytest.mark.parametrize("fill,message", [(0, "no cell"), (3, "no membrane")])
def test_labels_without_both_classes_are_refused(tmp_path, fill, message):
    labels = write_image(tmp_path / "labels.ome.zarr", np.full((2, 8, 8), fill, np.uint8), (1, 8, 8))
    with pytest.raises(InputError, match=f"labels.ome.zarr: the labels have {message}"):
        weights(labels, tmp_path / "w.ome.zarr", w0=10, sigma=5, class_balance="none", mode="2d", tolerance=1e-3,
                compression=COMPRESSION)
    assert not (tmp_path / "w.ome.zarr").exists()


def test_an_incompatible_checkpoint_is_named(tmp_path):
    image = write_image(tmp_path / "norm.ome.zarr", np.zeros((1, 16, 16), np.float32), (1, 16, 16))
    bad = tmp_path / "other.pt"
    torch.save({"model_config": {"depth": 2, "layers": 9}, "state_dict": {}}, bad)
    with pytest.raises(InputError, match="other.pt: not a checkpoint of a compatible unet-pipeline model"):
        run_predict(image, bad, tmp_path / "p.ome.zarr")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="garbage.pt"):
        run_predict(image, garbage, tmp_path / "p.ome.zarr")
    assert not (tmp_path / "p.ome.zarr").exists()


def test_a_waiting_writer_takes_over_when_the_holder_ends(tmp_path, capsys):
    output = tmp_path / "out.ome.zarr"
    holder = hold_lock(output, 3)
    outputs.set_on_busy("wait")
    started = time.monotonic()
    try:
        with outputs.atomic_output(output) as partial:
            assert time.monotonic() - started > 2, "the lock was taken while its holder still held it"
            partial.write_text("done")
    finally:
        outputs.set_on_busy("refuse")
        holder.wait()
    assert output.read_text() == "done"
    assert f"waiting for {output}: another run (pid {holder.pid} on" in capsys.readouterr().out


def test_chunks_and_tiles_larger_than_the_volume_are_clipped_to_it(tmp_path, random_checkpoint):
    volume = np.random.default_rng(5).random((2, 40, 30)).astype(np.float32)
    image = tmp_path / "norm.ome.zarr"
    ome_zarr.create_image(image, volume.shape, np.float32, (64, 512, 512), COMPRESSION, (50.0, 4.0, 4.0), "nanometer",
                    "norm")[:] = volume
    assert ome_zarr.open_image(image).chunks == (2, 40, 30)
    checkpoint = random_checkpoint(depth=2)
    run_predict(image, checkpoint, tmp_path / "big-tile.ome.zarr", tile=[8, 1024, 1024])
    run_predict(image, checkpoint, tmp_path / "reference.ome.zarr", tile=[2, 40, 30])
    assert np.array_equal(ome_zarr.open_image(tmp_path / "big-tile.ome.zarr")[:],
                          ome_zarr.open_image(tmp_path / "reference.ome.zarr")[:])


def test_a_tile_too_small_for_the_model_is_rounded_up_to_a_valid_output():
    from unet_pipeline.core.geometry import UNetGeometry

    geometry = UNetGeometry(depth=4)
    assert geometry.smallest_output_at_least(1) == 4  # never an empty output
    assert geometry.output_size(geometry.input_size(geometry.smallest_output_at_least(1))) == 4


def test_labels_or_predictions_of_another_shape_are_named(tmp_path):
    from unet_pipeline.stages.evaluate import evaluate
    from unet_pipeline.training.tiles import training_volumes

    image = write_image(tmp_path / "norm.ome.zarr", np.zeros((2, 16, 16), np.float32), (1, 16, 16))
    labels = write_image(tmp_path / "labels.ome.zarr", np.eye(12, dtype=np.uint8)[None].repeat(2, 0), (1, 12, 12))
    entry = {"volume": "crop", "image": str(image), "labels": str(labels), "weights": str(image), "sections": None,
             "weight": None}
    with pytest.raises(InputError, match=r"labels.ome.zarr: labels of volume 'crop' have shape \(2, 12, 12\), its "
                                         r"image .*norm.ome.zarr has \(2, 16, 16\)"):
        training_volumes([entry], "training")
    cells = write_image(tmp_path / "seg.ome.zarr", np.ones((2, 16, 16), np.uint32), (1, 16, 16))
    with pytest.raises(InputError, match=r"seg.ome.zarr: shape \(2, 16, 16\) does not match the labels' "
                                            r"\(2, 12, 12\)"):
        evaluate(cells, image, labels, tmp_path / "metrics.json", **evaluate_settings({"kind": "local"}))
    assert not (tmp_path / "metrics.json").exists()


STALL_S = 20  # well above a worker's start (importing torch, tensorstore and dask took 6 s on a slow day here)


@pytest.mark.parametrize("attempt", range(3))
def test_stopped_workers_hit_the_stall_timeout_every_time(tmp_path, random_checkpoint, attempt):
    """SIGSTOP every worker mid-run (alive to the kernel, silent to Dask): predict stops at its stall timeout,
    exits 2 naming the timeout, and does not hang while shutting its cluster down."""
    image = write_image(tmp_path / "norm.ome.zarr", np.random.default_rng(attempt).random((16, 128, 128), np.float32),
                        (1, 32, 32))
    output = tmp_path / "p.ome.zarr"
    settings = predict_settings(workers=2, tta=True, stall_timeout_s=STALL_S)
    process = subprocess.Popen([sys.executable, "-m", "unet_pipeline.cli", "predict", str(image),
                                str(random_checkpoint(depth=2, base_features=8)), str(output), "--settings",
                                json.dumps(settings)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log_folder = outputs.partial_path(output) / records.RECORDS
    deadline = time.monotonic() + 120
    while not (log_folder.exists() and len(records.finished_blocks(log_folder.parent)) >= 4):
        assert process.poll() is None and time.monotonic() < deadline, "predict never got going"
        time.sleep(0.02)
    workers = dask_worker_processes(psutil.Process(process.pid))
    assert len(workers) == 2, workers
    for worker in workers:
        worker.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=60)
        waited = time.monotonic() - stopped
    finally:
        for worker in workers:
            with contextlib.suppress(psutil.Error):
                worker.kill()
        process.kill()
    assert process.returncode == 2, stderr[-2000:]
    stalled = rf"(nothing finished|the results of finished tasks did not arrive) within {STALL_S} s"
    assert re.search(stalled, stderr), stderr
    assert waited < 3 * STALL_S, (waited, stderr[-2000:])
    assert not output.exists()
