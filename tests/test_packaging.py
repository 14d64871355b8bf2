"""pyproject.toml, environment.yml and the rules' environment declare the same dependencies."""

import os
import re
import subprocess
import sys

import tomllib
import yaml
from conftest import REPO

CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name, where they differ


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", requirement).groups()
    return name.lower(), spec.replace(" ", "")


def test_environment_yml_matches_pyproject():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = dict(_split(r) for r in pyproject["project"]["dependencies"])
    wanted = {CONDA_NAMES.get(name, name): spec for name, spec in wanted.items()}
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = dict(_split(d) for d in environment["dependencies"] if isinstance(d, str))
    conda.pop("python"), conda.pop("pip")
    assert conda == wanted



def test_the_rules_environment_lists_the_same_dependencies():
    environment, rules = (yaml.safe_load(path.read_text()) for path in
                          (REPO / "environment.yml", REPO / "workflow" / "envs" / "unet-pipeline.yaml"))
    plain = [d for d in environment["dependencies"] if isinstance(d, str)]
    assert [d for d in rules["dependencies"] if isinstance(d, str)] == plain
    assert rules["channels"] == environment["channels"]
    assert rules["dependencies"][-1] == {"pip": ["-e ${UNET_PIPELINE_ROOT}"]}


def test_pip_resolves_the_rules_environment_to_this_checkout(tmp_path):
    """Conda hands an environment's pip lines to `pip install -r`; pip expands ${VAR} there. A copy of the
    lines elsewhere (as Snakemake copies the file) must still name this package, once the Snakefile's
    variable is set."""
    rules = yaml.safe_load((REPO / "workflow" / "envs" / "unet-pipeline.yaml").read_text())
    requirements = tmp_path / "copied.requirements.txt"
    requirements.write_text("\n".join(rules["dependencies"][-1]["pip"]) + "\n")
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation",
               "--no-index", "-r", str(requirements)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "UNET_PIPELINE_ROOT": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Would install unet-pipeline" in done.stdout or "Would install unet_pipeline" in done.stdout
    unset = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "UNET_PIPELINE_ROOT"})
    assert unset.returncode != 0  # the variable is what names the checkout

