"""The Dask cluster a stage runs on, from the config's `cluster` block.

`local`: worker processes on this machine. With CUDA devices (and a device
setting that wants them) it is one worker per visible GPU, each pinned to its
GPU through CUDA_VISIBLE_DEVICES and advertising one `GPU` resource; inside a
Slurm allocation that is every GPU the allocation holds. Without, it is
`workers` CPU processes of `threads_per_worker` threads.
`slurm`: worker jobs submitted through dask-jobqueue's SLURMCluster, one
GPU each (`--gres=gpu:N`, advertising the `GPU` resource), scaled adaptively
between `min_jobs` and `max_jobs`; the jobs are cancelled when the run ends,
also when it fails.
`address`: an existing scheduler (start its GPU workers with `--resources GPU=1`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, Iterator

import dask
from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster
from distributed.scheduler import KilledWorker

from ..core.errors import ConfigError, workers_lost

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


def slurm_cluster(min_jobs: int, max_jobs: int, job_cores: int, job_memory: str, walltime: str, job_gpus: int,
                  extra_directives: list[str], interface: str | None, log_dir: str, torch_threads: int,
                  partition: str | None = None, account: str | None = None, qos: str | None = None) -> Any:
    """Dask workers as Slurm jobs (dask-jobqueue), scaled adaptively; closing it cancels the jobs."""
    from dask_jobqueue import SLURMCluster

    directives = list(extra_directives)
    if job_gpus:
        directives.append(f"--gres=gpu:{job_gpus}")
    if qos:
        directives.append(f"--qos={qos}")
    cluster = SLURMCluster(
        cores=job_cores, processes=1, memory=job_memory, walltime=walltime, queue=partition, account=account,
        job_extra_directives=directives, interface=interface, log_directory=log_dir,
        worker_extra_args=["--resources", f"{GPU}={job_gpus}"] if job_gpus else [],
        job_script_prologue=[  # the same worker environment as a local cluster's (see worker_environment)
            f'export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON="{worker_environment(torch_threads)!r}"',
            "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False"],
        scheduler_options={"dashboard_address": ":0"},
    )
    cluster.adapt(minimum_jobs=min_jobs, maximum_jobs=max_jobs)
    return cluster


@contextlib.contextmanager
def connect(kind: str, workers: int, threads_per_worker: int, address: str | None = None,
            device: str = "cpu", torch_threads: int = 1, slurm: dict[str, Any] | None = None,
            **jobs: Any) -> Iterator[Client]:
    """A client on the configured cluster; a cluster started here is shut down on exit (Slurm jobs cancelled)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown cluster.kind {kind!r}: expected one of {', '.join(KINDS)}")
    with KINDS[kind](workers=workers, threads_per_worker=threads_per_worker, address=address, device=device,
                     torch_threads=torch_threads, slurm=slurm or {}, jobs=jobs) as client:
        _announce(client)
        try:
            yield client
        except KilledWorker as error:  # from a Dask computation outside `tasks` (a pyramid, a store)
            raise workers_lost(f"Dask task {error.task}", error.allowed_failures + 1) from error


@contextlib.contextmanager
def _local(workers: int, threads_per_worker: int, device: str, torch_threads: int, **_: Any) -> Iterator[Client]:
    with local_cluster(workers, threads_per_worker, device, torch_threads) as cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _slurm(torch_threads: int, slurm: dict[str, Any], jobs: dict[str, Any], **_: Any) -> Iterator[Client]:
    placement = {k: slurm.get(k) for k in ("partition", "account", "qos")}
    with slurm_cluster(**jobs, torch_threads=torch_threads, **placement) as cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _address(address: str | None, **_: Any) -> Iterator[Client]:
    if not address:
        raise ConfigError("cluster.kind is 'address' but cluster.address is empty")
    with Client(address) as client:
        yield client


# cluster.kind -> a context manager yielding a client (started clusters stop on exit); a new kind goes here
KINDS: dict[str, Callable[..., contextlib.AbstractContextManager[Client]]] = {
    "local": _local, "slurm": _slurm, "address": _address}


def gpu_workers(client: Client) -> int:
    """How many connected workers advertise a GPU resource."""
    return sum(1 for worker in client.scheduler_info()["workers"].values() if worker.get("resources", {}).get(GPU))


def _announce(client: Client) -> None:
    print(f"dask scheduler {client.scheduler.address}, dashboard {client.dashboard_link}", file=sys.stderr,
          flush=True)
