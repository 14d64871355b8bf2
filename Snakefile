# unet-pipeline: the whole chain from a raw EM stack to report.html.
# Thin by design: stages live in workflow/rules/, all logic in the unet_pipeline package.
import os

from snakemake.utils import min_version, validate

from unet_pipeline.workflow.command_line_config import type_command_line_values

min_version("9.0")

# The rules' conda environment (workflow/envs/unet-pipeline.yaml) installs this checkout by this variable.
os.environ.update(UNET_PIPELINE_ROOT=workflow.basedir)


# The demo config applies only when no --configfile is given: a user's config then gets the schema's
# defaults for the keys it leaves out (as config/README.md lists them), not the demo's values.
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


type_command_line_values(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"


rule all:
    default_target: True
    input:
        result("report.html"),
        result("metrics.json"),


include: "workflow/rules/ingest.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
