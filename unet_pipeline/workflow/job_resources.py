"""Resources of each stage's job (threads, memory, run time, GPUs, Slurm placement), from the config.

Estimates, stated so they can be checked: memory from the section or tile
sizes the stage holds at once; run time from the volume size at conservative
CPU rates (1 Mvoxel/s for streaming stages, the predict benchmark's
0.07 Mpx/s per CPU worker for the paper's U-Net, 0.6 s per training iteration),
times `slurm.runtime_factor`. Partition, account and QoS come from the
config's `slurm` block, in one place.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any

from ..core.errors import InputError
from ..core.geometry import Box
from ..nn.model_config import ModelConfig, activation_bytes
from ..storage.sources import open_source
from .stage_config import architecture

MiB = 1 << 20
SEGMENT_BYTES_PER_VOXEL = 64  # a segment block and its context: probabilities, boundary units, ids, watershed


PLACEHOLDER_SHAPE = (1, 1024, 1024)


def volume_shape(config: dict[str, Any], volume: str) -> tuple[int, int, int]:
    """A raw volume's (z, y, x): the synthetic shape, or read from the raw file's header; a placeholder,
    said on stderr, while the file cannot be read (a dry run on another machine)."""
    given = config["volumes"][volume]
    return tuple(given["synthetic"]["shape"]) if "synthetic" in given else _source_shape(given["raw"])


def _stage_shape(config: dict[str, Any], stage: str, volume: str | None) -> tuple[int, int, int]:
    """The volume a job works on: its own; for train and report (run once), the largest one they read."""
    if volume is not None:
        return volume_shape(config, volume)
    names = [entry["volume"] for entry in config["training"]] if stage == "train" else list(config["volumes"])
    return max((volume_shape(config, name) for name in names or config["volumes"]), key=math.prod)


@functools.cache
def _source_shape(raw: str) -> tuple[int, int, int]:
    try:
        return tuple(open_source(raw).shape)
    except InputError as err:
        print(f"unet-pipeline: cannot read the shape of {raw} ({err}); job resources (memory, run time) assume "
              f"a volume of {' x '.join(map(str, PLACEHOLDER_SHAPE))} until it can be read", file=sys.stderr)
        return PLACEHOLDER_SHAPE


def stage_threads(config: dict[str, Any], stage: str) -> int:
    """The CPU threads of a stage's job: its rule's `threads` and its Slurm `cpus_per_task` (one source)."""
    cluster = config["cluster"]
    local = cluster["kind"] == "local"
    if stage == "train":
        return config["train"]["threads"]
    if stage == "predict":
        return max(1, cluster["workers"] * cluster["threads_per_worker"] * config["predict"]["torch_threads"]) \
            if local else 1
    if stage in ("segment", "evaluate"):  # both start local Dask workers of the same kind
        return max(1, cluster["workers"] * cluster["threads_per_worker"]) if local else 1
    return 1


def stage_resources(config: dict[str, Any], stage: str, volume: str | None = None) -> dict[str, Any]:
    """Keyword arguments of a rule's `resources` directive (of the job of `volume`, for a stage run per volume)."""
    depth, height, width = _stage_shape(config, stage, volume)
    voxels = depth * height * width
    section_mb = height * width * 4 / MiB
    model = ModelConfig.from_dict(architecture(config))  # an estimate, also for a given checkpoint
    slurm = config["slurm"]
    gpu = 0
    if stage == "train":
        tile = config["train"]["tile"]
        side = model.geometry.input_size(model.geometry.smallest_output_at_least(tile))
        activations = activation_bytes(model, (side,) * model.ndim, config["train"]["batch_size"]) / MiB
        mem_mb = 2000 + 4 * activations + 8 * section_mb * config["train"]["loader_workers"]
        minutes = config["train"]["iterations"] * 0.6 / 60
        gpu = int(slurm["gpus"])
    elif stage == "predict":
        cluster = config["cluster"]
        workers = cluster["workers"] if cluster["kind"] == "local" else 0
        tile = config["predict"]["tile"]
        edge = 512 if tile == "auto" else max(tile[1:])
        side = model.geometry.input_size(model.geometry.smallest_output_at_least(edge))
        per_worker = 1500 + 3 * activation_bytes(model, (side,) * model.ndim, config["predict"]["batch_tiles"]) / MiB
        mem_mb = 1500 + workers * per_worker
        minutes = voxels / (0.07e6 * max(workers, 1)) / 60
        gpu = int(slurm["gpus"]) if cluster["kind"] == "local" else 0
    elif stage in ("segment", "evaluate"):  # blocks of the same shape and context on the same workers
        cluster, segment = config["cluster"], config["segment"]
        workers = cluster["workers"] if cluster["kind"] == "local" else 0
        read = math.prod(Box.of_shape(segment["block"]).grow(segment["context"], segment["context"]).shape)
        mem_mb = 1500 + workers * (1000 + SEGMENT_BYTES_PER_VOXEL * read / MiB)
        minutes = voxels / 1e6 / 60
    else:
        mem_mb = 1500 + 16 * section_mb * config["storage"]["chunks"][0]
        minutes = voxels / 1e6 / 60
    resources: dict[str, Any] = {
        "mem_mb": int(math.ceil(mem_mb)),
        "runtime": int(math.ceil(10 + minutes * slurm["runtime_factor"])),
        "cpus_per_task": stage_threads(config, stage),
    }
    if gpu:
        resources["gpu"] = gpu
    for key, name in (("partition", "slurm_partition"), ("account", "slurm_account"), ("qos", "qos")):
        if slurm[key]:
            resources[name] = slurm[key]
    return resources
