"""pyproject.toml and environment.yml declare the same dependencies."""

import re

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

