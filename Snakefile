# unet-pipeline: the whole chain from a raw EM stack to report.html.
# Thin by design: stages live in workflow/rules/, all logic in the unet_pipeline package.
import os
import sys

from snakemake.utils import min_version, validate

from unet_pipeline.core.errors import ConfigError
from unet_pipeline.workflow.command_line_config import type_command_line_values
from unet_pipeline.workflow.job_environment import put_scripts_on_path
from unet_pipeline.workflow.volumes import check_unique_keys, plan

min_version("9.0")

# The rules' conda environment (workflow/envs/unet-pipeline.yaml) installs this checkout by this variable.
os.environ.update(UNET_PIPELINE_ROOT=workflow.basedir)
put_scripts_on_path()  # the rules call `unet-pipeline`, also from an environment that was never activated


# The demo config applies only when no --configfile is given: a user's config then gets the schema's
# defaults for the keys it leaves out (as config/README.md lists them), not the demo's values.
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


type_command_line_values(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))
CONFIG_FILES = workflow.overwrite_configfiles or [os.path.join(workflow.basedir, "config", "config.yaml")]
try:
    for path in CONFIG_FILES:
        check_unique_keys(path)
    validate(config, "workflow/schemas/config.schema.yaml")
    PLAN = plan(config, CONFIG_FILES)  # every volume named by training, validation, ... exists and fits its use
except ConfigError as err:
    print(f"unet-pipeline: config error: {err}", file=sys.stderr)
    sys.exit(2)


include: "workflow/rules/common.smk"


wildcard_constraints:
    volume="|".join(config["volumes"]),  # the names are [A-Za-z0-9_-]+ (schema): no regex characters


rule all:
    default_target: True
    input:
        final_targets(),


include: "workflow/rules/ingest.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"
