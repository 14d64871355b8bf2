"""Running the workflow from a benchmark: its config in a scratch folder, then Snakemake up to some outputs."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied, nested sections key by key."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = merged(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def write_config(config_file: Path, folder: Path, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `config_file` with `changes` to `folder`/config.yaml, results under `folder`/results; return it
    with the schema's defaults filled in, as the workflow sees it."""
    config = merged(yaml.safe_load(config_file.read_text()), changes or {})
    config["results_dir"] = str(folder / "results")
    for volume in config.get("volumes", {}).values():  # relative data paths are relative to the repository,
        for key in ("raw", "labels"):  # as for snakemake
            path = volume.get(key)
            if isinstance(path, str) and not Path(path).is_absolute():
                volume[key] = str(REPO / path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    validate(config, str(SCHEMA))
    return config


def results(config: dict[str, Any]) -> Path:
    """The folder of the workflow's outputs for `config`."""
    return Path(config["results_dir"]) / config["name"]


def run_workflow(folder: Path, targets: list[Path], cores: int) -> float:
    """Run Snakemake with `folder`/config.yaml up to `targets`; return its wall seconds. Exits with its
    messages when it fails."""
    command = [sys.executable, "-m", "snakemake", *map(str, targets), "--cores", str(cores), "--snakefile",
               str(REPO / "Snakefile"), "--directory", str(REPO), "--configfile", str(folder / "config.yaml")]
    start = time.perf_counter()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the rules call unet-pipeline
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PATH": path})
    if done.returncode:
        sys.exit(f"the workflow failed:\n{done.stderr[-4000:]}")
    return time.perf_counter() - start
