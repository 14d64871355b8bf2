"""Shared fixtures: small synthetic OME-Zarr images and tiny trained-or-random models."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from unet_pipeline.nn.checkpoint import save_checkpoint
from unet_pipeline.nn.model_config import ModelConfig
from unet_pipeline.nn.unet import UNet
from unet_pipeline.storage import ome_zarr

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO.parent / "shared" / "data" / "isbi2012"
COMPRESSION = ome_zarr.DEFAULT_COMPRESSION

# A log call with arguments that do not fit its format (distributed makes one while a killed worker's
# tasks are rescheduled) prints "Logging error" and goes on outside pytest; pytest's capture would raise
# it instead, inside the in-process Dask scheduler, and fail the client's gather. Behave as outside.
logging.raiseExceptions = False


def write_image(path: Path, volume: np.ndarray, chunks: tuple[int, ...]) -> Path:
    ome_zarr.create_image(path, volume.shape, volume.dtype, chunks, COMPRESSION, (50.0, 4.0, 4.0), "nanometer",
                    path.name)[:] = volume
    return path


def write_n5(folder: Path, volume: np.ndarray, block: tuple[int, ...], written: slice = slice(None)) -> Path:
    """An N5 dataset of the (z, y, x) `volume` as Java's N5 writers store it (dimensions and block size listed
    x, y, z; chunk file x/y/z), gzip; only the sections `written` are written (the rest of its chunks: never)."""
    import tensorstore

    spec = {"driver": "n5", "kvstore": {"driver": "file", "path": str(folder)}, "create": True,
            "metadata": {"dimensions": list(volume.shape[::-1]), "blockSize": list(block[::-1]),
                         "dataType": str(volume.dtype), "compression": {"type": "gzip"}}}
    tensorstore.open(spec).result().T[written].write(volume[written]).result()
    return folder


@pytest.fixture
def random_checkpoint(tmp_path: Path):
    """Factory: a checkpoint of a randomly initialised U-Net of the given depth and width."""

    def make(seed: int = 0, base_features: int = 4, **config) -> Path:
        torch.manual_seed(seed)
        path = tmp_path / f"model-{seed}-{base_features}-{'-'.join(f'{k}{v}' for k, v in sorted(config.items()))}.pt"
        save_checkpoint(path, UNet(ModelConfig(base_features=base_features, **config)))
        return path

    return make


@pytest.fixture(scope="session")
def dask_cluster():
    """Cluster settings of one real local Dask cluster (2 worker processes) that the tests share."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield {"kind": "address", "address": cluster.scheduler_address, "workers": 2, "threads_per_worker": 1}


def predict_settings(workers: int = 1, **changes) -> dict:
    """Keyword arguments of `predict.predict` for small test images (on a local cluster of `workers` processes;
    one-chunk tiles, float32, no mask), with `changes`."""
    settings = dict(tile=[1, 32, 32], batch_tiles=1, memory_budget_mb=256, dtype="float32", amp="none", tta=False,
                    device="cpu", torch_threads=1, stall_timeout_s=120, compression=COMPRESSION, intensity=None,
                    mask=None, cluster_settings={"kind": "local", "workers": workers, "threads_per_worker": 1})
    return {**settings, **changes}


def segment_settings(cluster_settings: dict, **changes) -> dict:
    """Keyword arguments of `segment.segment` for small test volumes (a fixed merge threshold with
    mean_threshold, no minimum size: not the schema's defaults), with `changes`."""
    settings = {"method": "agglomerate", "mode": "2d", "connectivity": None, "threshold": 0.5, "seed_threshold": 0.9,
                "seed_distance": 4, "agglomeration": "mean_threshold", "merge_threshold": 0.5,
                "merge_thresholds": [0.5], "tune_sections": None, "labels": None, "threshold_from": None,
                "ignore_label": None, "min_size": 0, "block": [4, 1024, 1024], "context": [2, 64, 64], "mask": None,
                "compression": COMPRESSION, "cluster_settings": cluster_settings, "stall_timeout_s": 120}
    return {**settings, **changes}


def probability_image(path: Path, cell_probability: np.ndarray, chunks: tuple[int, ...],
                      dtype: type = np.float32) -> Path:
    """A (c, z, y, x) probability image whose cell channel is `cell_probability`."""
    volume = np.stack([1 - cell_probability, cell_probability]).astype(dtype)
    ome_zarr.create_image(path, cell_probability.shape, dtype, chunks, COMPRESSION, (50, 4, 4), "nanometer", "p",
                    channels=2)[:] = volume
    return path


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renaming of ids (0 stays 0)."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def evaluate_settings(cluster_settings: dict, **changes) -> dict:
    """Keyword arguments of `evaluate.evaluate` for test volumes (every section, one threshold in the sweep,
    no baseline), with `changes`."""
    settings = {"sections": None, "threshold": 0.5, "thresholds": [0.5], "warping": True, "baseline_raw": None,
                "block": [4, 1024, 1024], "context": [2, 64, 64], "cluster_settings": cluster_settings,
                "stall_timeout_s": 120, "ignore_label": None}
    return {**settings, **changes}


def kill_process_group(process, timeout_s: float = 30) -> None:
    """SIGKILL a process started with start_new_session and everything in its group, and wait until each of
    them has exited (a zombie has): a forked child (a DataLoader worker) holds the output lock's file until then."""
    import os
    import signal
    import time

    import psutil

    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = []
        for other in psutil.process_iter(["status"]):
            try:
                if os.getpgid(other.pid) == process.pid and other.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(other.pid)
            except (ProcessLookupError, psutil.Error):
                pass
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes of group {process.pid} outlived SIGKILL for {timeout_s} s")


def dask_worker_processes(parent) -> list:
    """The Dask worker processes below a psutil process: spawned children, not multiprocessing's resource
    tracker (also a python child)."""
    import psutil

    workers = []
    for child in parent.children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "multiprocessing.spawn" in command and "resource_tracker" not in command:
            workers.append(child)
    return workers
