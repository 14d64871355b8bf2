"""Map the validated pipeline config onto each stage's settings (the keyword arguments
of the stage function), split in two:

- what shapes the output (`stage_settings`): the rule's params, so a change
  reruns exactly that stage and what depends on it, and part of the stage's
  run key;
- what only shapes the run (`run_settings`: threads, loader workers, device,
  batching, memory budget, cluster and Slurm placement, timeouts): passed on
  the command line outside the params, so changing it never reruns finished
  work (a finished run moves between a laptop and a cluster for free).
"""

from __future__ import annotations

from typing import Any

from ..core.stage_settings import RUN_ONLY, STAGES

RUN_ONLY_CONFIG = ("cluster", "slurm")  # config blocks that only shape runs


def stage_settings(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """The settings of `stage` that shape its output (see the module docstring)."""
    return {key: value for key, value in _settings(config, stage).items() if key not in RUN_ONLY.get(stage, ())}


def run_settings(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """The settings of `stage` that only shape how it runs."""
    every = _settings(config, stage)
    return {key: every[key] for key in RUN_ONLY.get(stage, ())}


def shown_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config without what only shapes runs: what the report shows (and reruns on)."""
    shown = {key: value for key, value in config.items() if key not in RUN_ONLY_CONFIG}
    for section in ("train", "predict"):
        shown[section] = {key: value for key, value in config[section].items() if key not in RUN_ONLY[section]}
    return shown


def _settings(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """Every keyword argument of `stage` from a config that the schema has validated and filled with defaults."""
    compression = config["storage"]["compression"]
    if stage == "ingest":
        data = config["data"]
        storage = config["storage"]
        return {"chunks": storage["chunks"], "compression": compression, "voxel_size": data["voxel_size"],
                "unit": data["unit"], "shards": storage["shards"], "ngff": storage["ngff"],
                "pyramid": storage["pyramid"], "missing_chunks": data["missing_chunks"]}
    if stage in ("preprocess", "weights"):
        return {**config[stage], "compression": compression}
    if stage == "segment":
        segment = config["segment"]
        tuned = segment["method"] == "agglomerate" and segment["merge_threshold"] == "auto"
        return {**segment, "tune_sections": segment["tune_sections"] or config["train"]["validation_sections"],
                "labels": f"{config['results_dir']}/{config['name']}/labels.ome.zarr" if tuned else None,
                "compression": compression, **_cpu_cluster(config)}
    if stage == "train":
        return {**config["train"], "model": config["model"]}
    if stage == "predict":
        return {**config["predict"], "compression": compression,
                "cluster_settings": {**config["cluster"], "slurm": config["slurm"]}}
    if stage == "evaluate":
        evaluate = config["evaluate"]
        raw = f"{config['results_dir']}/{config['name']}/raw.ome.zarr" if evaluate["baseline"] else None
        return {"sections": evaluate["sections"], "thresholds": evaluate["thresholds"], "warping": evaluate["warping"],
                "threshold": config["segment"]["threshold"], "baseline_raw": raw, "block": config["segment"]["block"],
                "context": config["segment"]["context"], **_cpu_cluster(config)}
    if stage == "report":
        return {**config["report"], "config": shown_config(config)}
    raise ValueError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")


def _cpu_cluster(config: dict[str, Any]) -> dict[str, Any]:
    """The Dask cluster of a blockwise CPU stage (Slurm worker jobs ask for no GPU) and its stall timeout."""
    return {"cluster_settings": {**config["cluster"], "job_gpus": 0, "slurm": config["slurm"]},
            "stall_timeout_s": config["predict"]["stall_timeout_s"]}
