"""The Dask cluster a stage runs on, from the config's `cluster` block.

`local`: worker processes on this machine. With CUDA devices (and a device
setting that wants them) it is one worker per visible GPU, each pinned to its
GPU through CUDA_VISIBLE_DEVICES and advertising one `GPU` resource; inside a
Slurm allocation that is every GPU the allocation holds. Without, it is
`workers` CPU processes of `threads_per_worker` threads.
`address`: an existing scheduler (start its GPU workers with `--resources GPU=1`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator

import dask
from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster

GPU = "GPU"


def visible_gpus() -> list[str]:
    """Ids of the CUDA devices this process may use (CUDA_VISIBLE_DEVICES first, as Slurm sets it)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu for gpu in listed.split(",") if gpu.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def wants_gpus(device: str) -> bool:
    if device == "cpu":
        return False
    import torch

    return torch.cuda.is_available() or device == "cuda"


def gpu_cluster(gpus: list[str]) -> SpecCluster:
    """One single-threaded worker process per GPU, pinned to it."""
    workers = {
        f"gpu-{gpu}": {"cls": Nanny, "options": {"nthreads": 1, "resources": {GPU: 1},
                                                 "env": {"CUDA_VISIBLE_DEVICES": gpu}}}
        for gpu in gpus
    }
    return SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}})


def worker_environment(torch_threads: int) -> dict[str, str]:
    """Environment of the worker processes we start.

    Dask's default sets MALLOC_TRIM_THRESHOLD_, which turns off glibc's
    adaptive mmap threshold: every large tensor is then mmapped and faulted
    in afresh, and a U-Net forward pass ran about 15 % slower here. We keep
    the thread caps, at the torch threads a task uses.
    """
    threads = str(torch_threads)
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}


def local_cluster(workers: int, threads_per_worker: int, device: str = "cpu", torch_threads: int = 1) -> Any:
    """Worker processes on this machine: one per visible GPU when the device wants CUDA, else `workers`."""
    settings = {"distributed.nanny.pre-spawn-environ": worker_environment(torch_threads),
                "distributed.worker.profile.enabled": False}  # its 10 ms sampling thread slows the forward pass
    with dask.config.set(settings):
        if wants_gpus(device):
            gpus = visible_gpus()
            if not gpus:
                raise RuntimeError("device 'cuda' was requested but no GPU is visible")
            return gpu_cluster(gpus)
        return LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                            dashboard_address=":0")


@contextlib.contextmanager
def connect(kind: str, workers: int, threads_per_worker: int, address: str | None = None,
            device: str = "cpu", torch_threads: int = 1) -> Iterator[Client]:
    """A client on the configured cluster; a cluster started here is shut down on exit."""
    if kind == "address":
        if not address:
            raise ValueError("cluster.kind is 'address' but cluster.address is empty")
        with Client(address) as client:
            _announce(client)
            yield client
        return
    if kind != "local":
        raise ValueError(f"unknown cluster.kind {kind!r}: expected 'local' or 'address'")
    with local_cluster(workers, threads_per_worker, device, torch_threads) as cluster, Client(cluster) as client:
        _announce(client)
        yield client


def gpu_workers(client: Client) -> int:
    """How many connected workers advertise a GPU resource."""
    return sum(1 for worker in client.scheduler_info()["workers"].values() if worker.get("resources", {}).get(GPU))


def _announce(client: Client) -> None:
    print(f"dask scheduler {client.scheduler.address}, dashboard {client.dashboard_link}", file=sys.stderr,
          flush=True)
