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

from ..core.annotation import ignore_label_of
from ..core.errors import ConfigError
from ..core.stage_settings import RUN_ONLY, STAGES
from .layout import Layout
from .volumes import Entry, plan

RUN_ONLY_CONFIG = ("cluster", "slurm")  # config blocks that only shape runs


def stage_settings(config: dict[str, Any], stage: str, volume: str | None = None) -> dict[str, Any]:
    """The settings of `stage` (of `volume`, for a stage run per volume) that shape its output (see the module
    docstring); the paths in them are those of `layout.Layout`."""
    return {key: value for key, value in _settings(config, stage, volume).items()
            if key not in RUN_ONLY.get(stage, ())}


def run_settings(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """The settings of `stage` that only shape how it runs (the same for every volume)."""
    every = _settings(config, stage, _any_volume(config, stage))
    return {key: every[key] for key in RUN_ONLY.get(stage, ())}


def optional_inputs(config: dict[str, Any], stage: str, volume: str | None = None) -> dict[str, str]:
    """The inputs `stage` reads only under some settings, by name, with their paths (the rule asks for these
    alone): for predict and segment of a volume with a tissue mask, the ingested mask ('mask'); for segment when
    it tunes its merge threshold, the labels of the volume it tunes on ('labels'), or, for every other volume,
    the segmentation that chose it ('tuned'); for evaluate's raw-threshold baseline, the raw ('raw')."""
    layout, run = Layout.of(config), plan(config)
    optional = {"mask": tissue_mask(config, volume)} if stage in ("predict", "segment") and volume else {}
    if stage == "segment" and run.tune is not None:
        if volume == run.tune.volume:
            optional["labels"] = layout.volume(volume, "labels.ome.zarr")
        else:
            optional["tuned"] = layout.volume(run.tune.volume, "segmentation.ome.zarr")
    if stage == "evaluate" and config["evaluate"]["baseline"]:
        optional["raw"] = layout.volume(volume, "raw.ome.zarr")
    return {name: path for name, path in optional.items() if path}


def shown_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config without what only shapes runs: what the report shows (and reruns on)."""
    shown = {key: value for key, value in config.items() if key not in RUN_ONLY_CONFIG}
    for stage, keys in RUN_ONLY.items():  # the config block of each such stage, less its run-only keys
        shown[stage] = {key: value for key, value in config[stage].items() if key not in keys}
    return shown


def _ingest(config: dict[str, Any], volume: str | None) -> dict[str, Any]:
    storage, given = config["storage"], config["volumes"][volume]
    return {"chunks": storage["chunks"], "compression": storage["compression"], "voxel_size": given["voxel_size"],
            "unit": given["unit"], "shards": storage["shards"], "ngff": storage["ngff"], "pyramid": storage["pyramid"],
            "missing_chunks": given["missing_chunks"], "in_place": given["in_place"], "roi": given["roi"],
            "label_mask": given["label_mask"], "ignore_label": given["ignore_label"], "mask_of": None}


def ingest_settings(config: dict[str, Any], volume: str, kind: str) -> dict[str, Any]:
    """Ingest's settings for `kind` ('raw', 'labels' or 'mask') of `volume`: the label mask and ignore label
    shape the labels alone, so a change of either never reruns the raw's ingest; a tissue mask is read against
    the volume's raw source."""
    settings = stage_settings(config, "ingest", volume)
    if kind == "labels":
        return settings
    return {**settings, "label_mask": None, "ignore_label": None,
            "mask_of": source_spec(config, volume, "raw") if kind == "mask" else None}


def source_spec(config: dict[str, Any], volume: str, kind: str) -> str:
    """What ingest reads as `kind` ('raw', 'labels' or 'mask') of `volume`: the user's source spec, or for the
    raw and labels of a synthetic volume, what `synth` wrote."""
    given = config["volumes"][volume]
    if "synthetic" in given and kind != "mask":
        return Layout.of(config).volume(volume, f"synthetic/{kind}.ome.zarr")
    return given[kind]


def ignore_label(config: dict[str, Any], volume: str) -> int | None:
    """The label value of `volume`'s unannotated voxels, as its labels were ingested (see `core.annotation`)."""
    given = config["volumes"][volume]
    return ignore_label_of(given["ignore_label"], given["label_mask"])


def _preprocess(config: dict[str, Any], volume: str | None) -> dict[str, Any]:
    return dict(config["preprocess"])


def _weights(config: dict[str, Any], volume: str | None) -> dict[str, Any]:
    return {**config["weights"], "compression": config["storage"]["compression"],
            "ignore_label": ignore_label(config, volume)}


def _train(config: dict[str, Any], volume: str | None) -> dict[str, Any]:
    layout, run = Layout.of(config), plan(config)

    def volumes(entries: tuple[Entry, ...]) -> list[dict[str, Any]]:
        return [{**entry.as_settings(), **{name: layout.volume(entry.volume, file)
                                          for name, file in TRAINING_ARRAYS.items()},
                 "ignore_label": ignore_label(config, entry.volume)} for entry in entries]

    return {**config["train"], "model": architecture(config), "training": volumes(run.training),
            "validation": volumes(run.validation)}


def tissue_mask(config: dict[str, Any], volume: str) -> str | None:
    """The ingested tissue mask of `volume` that predict and segment skip empty tiles and blocks by, if any."""
    return Layout.of(config).volume(volume, "mask.ome.zarr") if config["volumes"][volume]["mask"] else None


def _predict(config: dict[str, Any], volume: str | None) -> dict[str, Any]:
    return {**config["predict"], "compression": config["storage"]["compression"],
            "intensity": Layout.of(config).volume(volume, "intensity.json"), "mask": tissue_mask(config, volume),
            "cluster_settings": {**config["cluster"], "slurm": config["slurm"]}}


def _segment(config: dict[str, Any], volume: str | None) -> dict[str, Any]:
    segment, run = config["segment"], plan(config)
    optional = optional_inputs(config, "segment", volume)
    tune_sections = run.tune.sections if run.tune and volume == run.tune.volume else None
    settings = {key: value for key, value in segment.items() if key != "tune"}
    return {**settings, "tune_sections": list(tune_sections) if tune_sections else None,
            "labels": optional.get("labels"), "threshold_from": optional.get("tuned"),
            "ignore_label": ignore_label(config, volume) if "labels" in optional else None,
            "compression": config["storage"]["compression"], "mask": tissue_mask(config, volume),
            **_cpu_cluster(config)}


def _evaluate(config: dict[str, Any], volume: str | None) -> dict[str, Any]:
    evaluate, segment = config["evaluate"], config["segment"]
    entry = plan(config).evaluated(volume) if volume else None
    sections = entry.sections if entry else None
    return {"sections": list(sections) if sections else None, "thresholds": evaluate["thresholds"],
            "warping": evaluate["warping"], "threshold": segment["threshold"],
            "baseline_raw": optional_inputs(config, "evaluate", volume).get("raw"),
            "block": segment["block"], "context": segment["context"], "stall_timeout_s": evaluate["stall_timeout_s"],
            "ignore_label": ignore_label(config, volume) if volume else None, **_cpu_cluster(config)}


def _report(config: dict[str, Any], volume: str | None) -> dict[str, Any]:
    return {**config["report"], **report_inputs(config), "config": shown_config(config)}


def report_inputs(config: dict[str, Any]) -> dict[str, Any]:
    """What the report reads: every processed volume's images (and labels, weights and metrics where it has
    them), the training log (None when the model came from a checkpoint) and the segmentation whose merge
    threshold was tuned (None without tuning)."""
    layout, run = Layout.of(config), plan(config)
    weights_of = {entry.volume for entry in run.training}
    volumes = []
    for name in run.processed:
        images = {kind: layout.volume(name, f"{kind}.ome.zarr") for kind in ("raw", "probabilities", "segmentation")}
        scored = run.evaluated(name) is not None
        volumes.append({"volume": name, **images,
                        "labels": layout.volume(name, "labels.ome.zarr") if scored or name in weights_of else None,
                        "weights": layout.volume(name, "weights.ome.zarr") if name in weights_of else None,
                        "metrics": layout.volume(name, "metrics.json") if scored else None})
    return {"volumes": volumes, "train_log": layout.model("train_log.csv") if run.trains else None,
            "tuned": layout.volume(run.tune.volume, "segmentation.ome.zarr") if run.tune else None}


def architecture(config: dict[str, Any]) -> dict[str, Any]:
    """The `model` block without `checkpoint`: the network to build (see `nn.model_config.ModelConfig`)."""
    return {key: value for key, value in config["model"].items() if key != "checkpoint"}


def export_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `zoo.export.export` for the model this run trains: its first training volume's
    raw image as the test input's source, preprocess's percentiles, the `export` block's authors and name."""
    first = plan(config).training[0].volume
    return {"sample": Layout.of(config).volume(first, TRAINING_ARRAYS["image"]),
            "percentiles": [config["preprocess"]["low_percentile"], config["preprocess"]["high_percentile"]],
            "authors": config["export"]["authors"], "name": config["export"]["name"], "metrics": []}


def model_checkpoint(config: dict[str, Any]) -> str:
    """The checkpoint predict applies: `model.checkpoint`, or the one this run trains."""
    return plan(config).checkpoint or Layout.of(config).model("checkpoint.pt")


# stage -> its keyword arguments from a config that the schema has validated and filled with defaults
_STAGE_SETTINGS: dict[str, Callable[[dict[str, Any], str | None], dict[str, Any]]] = {
    "ingest": _ingest, "preprocess": _preprocess, "weights": _weights, "train": _train, "predict": _predict,
    "segment": _segment, "evaluate": _evaluate, "report": _report}


PER_VOLUME = ("ingest", "preprocess", "weights", "predict", "segment", "evaluate")  # run once per volume
# what train reads of each volume: its raw image, normalised by its intensity statistics, labels and weights
TRAINING_ARRAYS = {"image": "raw.ome.zarr", "intensity": "intensity.json", "labels": "labels.ome.zarr",
                   "weights": "weights.ome.zarr"}


def _settings(config: dict[str, Any], stage: str, volume: str | None) -> dict[str, Any]:
    if stage not in _STAGE_SETTINGS:
        raise ValueError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
    if (stage in PER_VOLUME) != (volume is not None):
        raise ValueError(f"stage {stage!r} {'needs' if stage in PER_VOLUME else 'takes no'} volume")
    if volume is not None and volume not in config["volumes"]:
        raise ConfigError(f"no volume {volume!r} in volumes ({', '.join(config['volumes'])})")
    return _STAGE_SETTINGS[stage](config, volume)


def _any_volume(config: dict[str, Any], stage: str) -> str | None:
    """A volume for a per-volume stage's run-only settings (they are the same for every volume)."""
    return plan(config).processed[0] if stage in PER_VOLUME else None


def _cpu_cluster(config: dict[str, Any]) -> dict[str, Any]:
    """The Dask cluster of a blockwise CPU stage (Slurm worker jobs ask for no GPU)."""
    return {"cluster_settings": {**config["cluster"], "job_gpus": 0, "slurm": config["slurm"]}}
