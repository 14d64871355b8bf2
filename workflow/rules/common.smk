# Shared helpers of the workflow: output paths, data sources and stage settings.
import json
import os
from pathlib import Path

from unet_pipeline.core.stage_settings import RUN_ONLY
from unet_pipeline.storage.provenance import input_fingerprint
from unet_pipeline.storage.sources import source_file
from unet_pipeline.storage.tables import sections_table_path
from unet_pipeline.workflow.job_resources import stage_resources, stage_threads
from unet_pipeline.workflow.layout import Layout
from unet_pipeline.workflow.stage_config import (
    TRAINING_ARRAYS,
    export_settings,
    ingest_settings,
    model_checkpoint,
    source_spec,
    optional_inputs,
    report_inputs,
    run_settings,
    stage_settings,
)

LAYOUT = Layout.of(config)
ENV = "../envs/unet-pipeline.yaml"  # installs this checkout through UNET_PIPELINE_ROOT (set in the Snakefile)
VOLUMES = config["volumes"]


def result(name):
    """Path of a run-wide output under results/<name>/."""
    return LAYOUT.result(name)


def of_volume(name):
    """Path of an output of the rule's {volume} under results/<name>/volumes/<volume>/."""
    return LAYOUT.volume("{volume}", name)


def log_of(rule_name):
    return LAYOUT.log(rule_name, "{volume}")


def source(volume, kind):
    """What ingest reads as `kind` ('raw', 'labels' or 'mask') of a volume (see `stage_config.source_spec`)."""
    return source_spec(config, volume, kind)


def sources_on_disk(wildcards):
    """The file or folder of each source one ingest job reads (an HDF5 file or N5 container for a dataset inside
    one)."""
    return [str(source_file(spec)) for spec in read_by_ingest(wildcards)]


def read_by_ingest(wildcards):
    """The source specs one ingest job reads: the source; for labels also the label mask, for a tissue mask
    also the raw (its shape sets the mask's scale)."""
    extra = {"labels": VOLUMES[wildcards.volume].get("label_mask"), "mask": source(wildcards.volume, "raw")}
    also = extra.get(wildcards.kind)
    return [source(wildcards.volume, wildcards.kind), *([also] if also else [])]


def folder_source_state(wildcards):
    """A fingerprint over the files of each folder source (Zarr, OME-Zarr, N5, a folder of sections): a chunk
    rewritten in place leaves the folder's own mtime alone, so Snakemake would not see it; '' for a file (its
    mtime says) and for what synth wrote (an output of this workflow)."""
    synthetic = Path(LAYOUT.volume(wildcards.volume, "synthetic"))
    folders = [source_file(spec) for spec in read_by_ingest(wildcards)]
    return " ".join(
        input_fingerprint(folder) if folder.is_dir() and folder.parent != synthetic else "" for folder in folders
    )


def read_only_with_settings(stage):
    """The inputs a stage reads only under some settings (the tissue mask of predict and segment, segment's labels
    or the tuned segmentation, evaluate's raw for its baseline), by name: the rule asks for these and no others."""
    return lambda wildcards: optional_inputs(config, stage, wildcards.volume)


def ingest_settings_of_kind(wildcards):
    """Ingest's settings for the rule's {kind} as JSON (see `stage_config.ingest_settings`)."""
    return json.dumps(ingest_settings(config, wildcards.volume, wildcards.kind), sort_keys=True)


def settings(stage):
    """The stage settings as JSON, passed as params so that a change reruns exactly that stage (of that
    volume)."""
    return lambda wildcards: json.dumps(stage_settings(config, stage, wildcards.get("volume")), sort_keys=True)


def threads_of(stage):
    """The CPU threads of a stage's job (also its Slurm cpus_per_task)."""
    return stage_threads(config, stage)


def resources_of(stage, per_volume=True):
    """Memory, run time, CPUs, GPUs and Slurm placement of a stage's job (of the rule's {volume} when
    `per_volume`), derived from the config; for a stage with settings that only shape how it runs (threads,
    device, cluster, timeouts), those too, as the JSON resource `run_settings` passed on as `--run`. Resources
    are no rerun trigger, so changing these never reruns a finished stage."""
    how = {"run_settings": json.dumps(run_settings(config, stage), sort_keys=True)} if stage in RUN_ONLY else {}
    if not per_volume:
        return {**stage_resources(config, stage), **how}
    keys = stage_resources(config, stage, next(iter(VOLUMES)))  # the same keys for every volume
    return {**{key: _of_volume_job(stage, key) for key in keys}, **how}


def _of_volume_job(stage, key):
    return lambda wildcards: stage_resources(config, stage, wildcards.volume)[key]


def training_arrays(wildcards):
    """Every file train reads: the normalised image, labels and weights of each training and validation
    volume, and the checkpoint it fine-tunes (`train.init_from`)."""
    train = stage_settings(config, "train")
    arrays = {entry[name] for entry in train["training"] + train["validation"] for name in TRAINING_ARRAYS}
    return sorted(arrays | ({train["init_from"]} if train["init_from"] else set()))


def report_files(wildcards):
    """Every file the report reads (see `stage_config.report_inputs`)."""
    given = report_inputs(config)
    paths = [path for volume in given["volumes"] for key, path in volume.items() if key != "volume" and path]
    paths += [str(sections_table_path(volume["metrics"])) for volume in given["volumes"] if volume["metrics"]]
    return sorted({*paths, *(path for path in (given["train_log"], given["tuned"]) if path)})


def final_targets():
    """What the target rule `all` asks for - every processed volume's segmentation, the metrics of the scored ones, the
    report, and the bioimage.io package of the model the run trains."""
    run = PLAN
    return (
        [LAYOUT.volume(name, "segmentation.ome.zarr") for name in run.processed]
        + [LAYOUT.volume(entry.volume, "metrics.json") for entry in run.evaluation]
        + [result("report.html")]
        + ([LAYOUT.model("bioimageio.zip")] if run.trains and config["export"]["bioimageio"] else [])
    )
