# Shared helpers of the workflow: output paths, data sources and stage settings.
import json
import os

from unet_pipeline.core.stage_settings import RUN_ONLY
from unet_pipeline.storage.sources import source_file
from unet_pipeline.workflow.job_resources import stage_resources, stage_threads
from unet_pipeline.workflow.stage_config import optional_inputs, run_settings, stage_settings

RESULTS = f"{config['results_dir']}/{config['name']}"
ENV = "../envs/unet-pipeline.yaml"  # installs this checkout through UNET_PIPELINE_ROOT (set in the Snakefile)


def result(name):
    """Path of an output under results/<name>/."""
    return f"{RESULTS}/{name}"


def log_file(rule_name):
    return f"{RESULTS}/logs/{rule_name}.log"


def source(kind):
    """What ingest reads as `kind` ('raw' or 'labels'): the user's source spec or the synthetic volume."""
    given = config["data"][kind]
    return given if given is not None else result(f"synthetic/{kind}.ome.zarr")


def source_on_disk(kind):
    """The file or folder of that source (an HDF5 file or N5 container for a dataset inside one)."""
    return str(source_file(source(kind)))


def read_only_with_settings(stage):
    """The inputs a stage reads only under some settings (segment's labels when it tunes, evaluate's raw for
    its baseline), by name: the rule asks for these and no others."""
    paths = {"labels": result("labels.ome.zarr"), "raw": result("raw.ome.zarr")}
    return {name: paths[name] for name in optional_inputs(config, stage)}


def settings(stage):
    """The stage settings as JSON, passed as params so that a change reruns exactly that stage."""
    return json.dumps(stage_settings(config, stage, read_only_with_settings(stage)), sort_keys=True)


def threads_of(stage):
    """The CPU threads of a stage's job (also its Slurm cpus_per_task)."""
    return stage_threads(config, stage)


def resources_of(stage):
    """Memory, run time, CPUs, GPUs and Slurm placement of a stage's job, derived from the config; for a stage
    with settings that only shape how it runs (threads, device, cluster, timeouts), those too, as the JSON
    resource `run_settings` passed on as `--run`. Resources are no rerun trigger, so changing these never
    reruns a finished stage."""
    how = {"run_settings": json.dumps(run_settings(config, stage), sort_keys=True)} if stage in RUN_ONLY else {}
    return {**stage_resources(config, stage), **how}
