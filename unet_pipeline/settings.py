"""Map the validated pipeline config onto each stage's settings (the keyword arguments
of the stage function). Snakemake rules pass these as JSON to `unet-pipeline <stage>`;
a stage's rule reruns exactly when its settings change."""

from __future__ import annotations

from typing import Any

STAGES = ("ingest", "preprocess", "weights", "train", "predict", "segment", "evaluate", "report")


def stage_settings(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """The settings of `stage` from a config that the schema has validated and filled with defaults."""
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
        return {**config["report"], "config": config}
    raise ValueError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")


def _cpu_cluster(config: dict[str, Any]) -> dict[str, Any]:
    """The Dask cluster of a blockwise CPU stage (Slurm worker jobs ask for no GPU) and its stall timeout."""
    return {"cluster_settings": {**config["cluster"], "job_gpus": 0, "slurm": config["slurm"]},
            "stall_timeout_s": config["predict"]["stall_timeout_s"]}
