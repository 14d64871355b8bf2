"""The package's layering: each subpackage imports only the layers below it, array code knows no scheduler,
storage or stage, stages do not import each other, and what the Snakefile parses never imports torch."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "unet_pipeline"

# What each layer may import of the package (besides itself and the package root's __version__).
ALLOWED = {
    "core": set(),
    "storage": {"core"},
    "segmentation": {"core"},
    "nn": {"core"},
    "figures": {"core"},
    "training": {"core", "storage", "segmentation", "nn"},
    "distributed": {"core", "storage", "segmentation", "nn"},
    "stages": {"core", "storage", "segmentation", "nn", "figures", "training", "distributed", "zoo"},
    "workflow": {"core", "storage", "nn"},
    "zoo": {"core", "storage", "nn"},
    "cli": {"core", "storage", "segmentation", "nn", "figures", "training", "distributed", "stages", "workflow",
            "zoo"},
}
# Array code: numpy (and torch in nn) in and out, no storage or scheduling library.
IO_AND_SCHEDULING = {"dask", "distributed", "dask_jobqueue", "zarr", "numcodecs", "tensorstore", "ome_zarr", "h5py",
                     "tifffile", "snakemake"}
FORBIDDEN = {"core": IO_AND_SCHEDULING | {"torch"}, "segmentation": IO_AND_SCHEDULING | {"torch"},
             "nn": IO_AND_SCHEDULING, "figures": IO_AND_SCHEDULING | {"torch"}}


def imports(path: Path, package: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted module) of every import in a module of `package` (lazy ones inside functions too);
    `from X import name` counts as X.name, so a submodule imported by name is named."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    here = parts[:-1]  # the module's package
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[: len(here) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, [base, node.module or ""]))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def layer_of(parts: tuple[str, ...]) -> str | None:
    """The layer of a module of the package by its dotted parts below the package ('cli', or a subpackage)."""
    if not parts or parts == ("__version__",) or parts == ("__init__",):
        return None
    return "cli" if parts[0] == "cli" else parts[0]


def violations(package: Path) -> list[str]:
    """Every import that breaks the layering, as 'file:line: what'."""
    name = package.name
    found = []
    for path in sorted(package.rglob("*.py")):
        own = path.relative_to(package).with_suffix("").parts
        layer = layer_of(own)
        if layer is None:
            continue
        for line, module in imports(path, package):
            where = f"{path.relative_to(package.parent)}:{line}"
            top, *rest = module.split(".")
            if top != name:
                if top in FORBIDDEN.get(layer, ()):
                    found.append(f"{where}: {layer} imports {top}")
                continue
            target = layer_of(tuple(rest))
            if target is None or target == layer and layer != "stages":
                continue
            if layer == "stages" and target == "stages":
                if len(rest) > 1 and rest[1] != own[1]:
                    found.append(f"{where}: stage {own[1]} imports stage {rest[1]}")
                continue
            if target not in ALLOWED[layer]:
                found.append(f"{where}: {layer} imports {target} ({module})")
    return found


def test_every_layer_imports_only_the_layers_below_it():
    assert set(ALLOWED) - {"cli"} == {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert violations(PACKAGE) == []


@pytest.mark.parametrize("module, planted, expected", [
    ("segmentation/labeling.py", "from ..distributed import tasks", "segmentation imports distributed"),
    ("nn/mirror.py", "import zarr", "nn imports zarr"),
    ("core/geometry.py", "from ..storage.ome_zarr import open_image", "core imports storage"),
    ("stages/report.py", "from .evaluate import evaluate", "stage report imports stage evaluate"),
    ("storage/sources.py", "from ..stages import ingest", "storage imports stages"),
])
def test_a_planted_bad_import_is_found(tmp_path, module, planted, expected):
    copy = tmp_path / PACKAGE.name
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{planted}\n")
    found = violations(copy)
    assert len(found) == 1 and expected in found[0] and found[0].startswith(f"unet_pipeline/{module}:")


def test_the_workflow_parse_imports_no_torch():
    """What the Snakefile and the rules import (every Snakefile parse does this) loads no torch."""
    sources = [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]
    statements = sorted({match.group(0).strip() for source in sources for match in  # parenthesised: many lines
                         re.finditer(r"^\s*from unet_pipeline[.\w]* import (\([^)]*\)|.*)$", source.read_text(), re.M)})
    assert any("job_resources" in s for s in statements) and any("command_line_config" in s for s in statements)
    torch_modules = "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    probe = "\n".join([*statements, "import sys", torch_modules])
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
