"""The environment the workflow's shell commands run in."""

from __future__ import annotations

import os
import sysconfig


def put_scripts_on_path() -> None:
    """Put the scripts folder of the Python that runs Snakemake (its `unet-pipeline` command) first on PATH, so
    that the rules find it also when that environment was never activated (`.venv/bin/snakemake`, README
    command 2). Jobs inherit it, and a rule's conda environment, activated inside the job, still comes first."""
    scripts = sysconfig.get_path("scripts")
    folders = os.environ.get("PATH", "").split(os.pathsep)
    if folders[0] != scripts:
        os.environ["PATH"] = os.pathsep.join([scripts, *folders])
