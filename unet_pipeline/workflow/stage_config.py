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

from typing import Any, Callable

from ..core.stage_settings import RUN_ONLY, STAGES

RUN_ONLY_CONFIG = ("cluster", "slurm")  # config blocks that only shape runs
Inputs = dict[str, str]  # the optional inputs a stage reads, by name (see `optional_inputs`), and their paths


def stage_settings(config: dict[str, Any], stage: str, inputs: Inputs | None = None) -> dict[str, Any]:
    """The settings of `stage` that shape its output (see the module docstring); `inputs`: the paths of the
    optional inputs that `optional_inputs` names (the workflow owns the paths; a stage without them gets None)."""
    return {key: value for key, value in _settings(config, stage, inputs or {}).items()
            if key not in RUN_ONLY.get(stage, ())}


def run_settings(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """The settings of `stage` that only shape how it runs."""
    every = _settings(config, stage, {})
    return {key: every[key] for key in RUN_ONLY.get(stage, ())}


def optional_inputs(config: dict[str, Any], stage: str) -> list[str]:
    """The inputs `stage` reads only under some settings, by name: 'labels' for segment when it tunes its merge
    threshold, 'raw' for evaluate when it scores the raw-threshold baseline; the rule asks for these alone."""
    if stage == "segment" and _tuned(config["segment"]):
        return ["labels"]
    if stage == "evaluate" and config["evaluate"]["baseline"]:
        return ["raw"]
    return []


def shown_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config without what only shapes runs: what the report shows (and reruns on)."""
    shown = {key: value for key, value in config.items() if key not in RUN_ONLY_CONFIG}
    for stage, keys in RUN_ONLY.items():  # the config block of each such stage, less its run-only keys
        shown[stage] = {key: value for key, value in config[stage].items() if key not in keys}
    return shown


def _tuned(segment: dict[str, Any]) -> bool:
    return segment["method"] == "agglomerate" and segment["merge_threshold"] == "auto"


def _ingest(config: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    data, storage = config["data"], config["storage"]
    return {"chunks": storage["chunks"], "compression": storage["compression"], "voxel_size": data["voxel_size"],
            "unit": data["unit"], "shards": storage["shards"], "ngff": storage["ngff"], "pyramid": storage["pyramid"],
            "missing_chunks": data["missing_chunks"]}


def _preprocess(config: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    return {**config["preprocess"], "compression": config["storage"]["compression"]}


def _weights(config: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    return {**config["weights"], "compression": config["storage"]["compression"]}


def _train(config: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    return {**config["train"], "model": config["model"]}


def _predict(config: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    return {**config["predict"], "compression": config["storage"]["compression"],
            "cluster_settings": {**config["cluster"], "slurm": config["slurm"]}}


def _segment(config: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    segment = config["segment"]
    return {**segment, "tune_sections": segment["tune_sections"] or config["train"]["validation_sections"],
            "labels": inputs.get("labels") if _tuned(segment) else None,
            "compression": config["storage"]["compression"], **_cpu_cluster(config)}


def _evaluate(config: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    evaluate, segment = config["evaluate"], config["segment"]
    return {"sections": evaluate["sections"], "thresholds": evaluate["thresholds"], "warping": evaluate["warping"],
            "threshold": segment["threshold"], "baseline_raw": inputs.get("raw") if evaluate["baseline"] else None,
            "block": segment["block"], "context": segment["context"], "stall_timeout_s": evaluate["stall_timeout_s"],
            **_cpu_cluster(config)}


def _report(config: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    return {**config["report"], "config": shown_config(config)}


# stage -> its keyword arguments from a config that the schema has validated and filled with defaults
_STAGE_SETTINGS: dict[str, Callable[[dict[str, Any], Inputs], dict[str, Any]]] = {
    "ingest": _ingest, "preprocess": _preprocess, "weights": _weights, "train": _train, "predict": _predict,
    "segment": _segment, "evaluate": _evaluate, "report": _report}


def _settings(config: dict[str, Any], stage: str, inputs: Inputs) -> dict[str, Any]:
    if stage not in _STAGE_SETTINGS:
        raise ValueError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
    return _STAGE_SETTINGS[stage](config, inputs)


def _cpu_cluster(config: dict[str, Any]) -> dict[str, Any]:
    """The Dask cluster of a blockwise CPU stage (Slurm worker jobs ask for no GPU)."""
    return {"cluster_settings": {**config["cluster"], "job_gpus": 0, "slurm": config["slurm"]}}
