"""bioimage.io model packages: what `unet-pipeline export` writes passes the ecosystem's own test
(`bioimageio.core.test_model`: both weight formats reproduce the test output and run at every size it tries)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import yaml
from conftest import write_image

from unet_pipeline.core.errors import InputError
from unet_pipeline.core.geometry import UNetGeometry
from unet_pipeline.stages.synth import synthetic_volume
from unet_pipeline.zoo.export import export, sample_input_size, valid_sizes

bioimageio_core = pytest.importorskip("bioimageio.core", reason="bioimageio.core is not installed (extra 'zoo')")


def export_settings(sample, **changes) -> dict:
    return {"sample": str(sample), "percentiles": [0.5, 99.5], "authors": [{"name": "A. Tester"}], "name": None,
            "metrics": [], **changes}


@pytest.fixture
def sample(tmp_path):
    raw, _ = synthetic_volume((3, 200, 200), seed=1)
    return write_image(tmp_path / "raw.ome.zarr", raw, (1, 100, 100))


def passed_checks(package) -> list[str]:
    summary = bioimageio_core.test_model(package)
    assert summary.status == "passed", [(d.name, d.errors) for d in summary.details if d.status != "passed"]
    return [detail.name for detail in summary.details]


@pytest.mark.parametrize("model", [{"depth": 2}, {"depth": 1, "padding": "same"}, {"depth": 1, "ndim": 3}],
                         ids=["valid-2d", "same-2d", "valid-3d"])
def test_an_exported_package_passes_bioimageio_core_test_model(tmp_path, sample, random_checkpoint, model):
    if model.get("ndim") == 3:  # a block, not a section, for the 3D test input
        raw, _ = synthetic_volume((44, 48, 48), seed=2)
        sample = write_image(tmp_path / "stack.ome.zarr", raw, (4, 48, 48))
    checkpoint = random_checkpoint(**model)
    summary = export(checkpoint, tmp_path / "model.zip", **export_settings(sample))
    checks = passed_checks(tmp_path / "model.zip")
    for weights in ("pytorch_state_dict", "torchscript"):
        assert f"Reproduce test outputs from test inputs ({weights})" in checks
        assert sum(f"Run {weights} inference" in check for check in checks) >= 2  # several parameterised sizes
    geometry = UNetGeometry(depth=model["depth"], ndim=model.get("ndim", 2), padding=model.get("padding", "valid"))
    assert summary["test_input"] == [sample_input_size(geometry, 200 if geometry.ndim == 2 else 44)] * geometry.ndim


def test_the_package_describes_the_network_and_records_its_provenance(tmp_path, sample, random_checkpoint):
    checkpoint = random_checkpoint(depth=2)
    export(checkpoint, tmp_path / "model.zip", **export_settings(sample))
    with zipfile.ZipFile(tmp_path / "model.zip") as package:
        rdf = yaml.safe_load(package.read("rdf.yaml"))
        names = set(package.namelist())
    assert {"weights.pt", "weights_torchscript.pt", "test_input.npy", "test_output.npy", "cover.png",
            "README.md"} <= names
    geometry = UNetGeometry(depth=2)
    (inputs,), (outputs,) = rdf["inputs"], rdf["outputs"]
    assert [axis["type"] for axis in inputs["axes"]] == ["batch", "channel", "space", "space"]
    assert inputs["axes"][2]["size"] == {"min": valid_sizes(geometry)[0], "step": 4}
    assert outputs["axes"][2]["size"] == {"tensor_id": "raw", "axis_id": "y", "offset": -2 * geometry.halo}
    steps = [step for step in inputs["preprocessing"] if step["id"] != "ensure_dtype"]  # the spec adds those
    assert [step["id"] for step in steps] == ["scale_range", "clip"] and steps[0]["kwargs"]["min_percentile"] == 0.5
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-319-24574-4_28"
    assert rdf["config"]["unet_pipeline"]["model"]["depth"] == 2
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == "ProbabilityUNet"


def test_a_sample_too_small_for_the_test_input_is_named(tmp_path, random_checkpoint):
    small = write_image(tmp_path / "small.ome.zarr", np.zeros((1, 40, 40), np.uint8), (1, 40, 40))
    with pytest.raises(InputError, match=r"small.ome.zarr: \(40, 40\) is too small for the package's test input: "
                                         r"it needs 44 voxels"):
        export(random_checkpoint(depth=2), tmp_path / "model.zip", **export_settings(small))
    assert not (tmp_path / "model.zip").exists()


def test_export_without_authors_warns_and_a_damaged_checkpoint_exits_2(tmp_path, sample, random_checkpoint):
    with pytest.warns(UserWarning, match="names no author"):
        export(random_checkpoint(depth=1), tmp_path / "model.zip", **export_settings(sample, authors=[]))
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "unet_pipeline.cli", "export", str(damaged), str(tmp_path / "d.zip"),
                             "--settings", json.dumps(export_settings(sample))], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{damaged}: the checkpoint cannot be read" in result.stderr


def test_info_reads_a_package_and_verify_compares_two_packages_weights(tmp_path, sample, random_checkpoint):
    first, again, other = (tmp_path / f"{name}.zip" for name in ("first", "again", "other"))
    export(random_checkpoint(depth=1, seed=0), first, **export_settings(sample))
    export(random_checkpoint(depth=1, seed=0), again, **export_settings(sample, name="same weights (another name)"))
    export(random_checkpoint(depth=1, seed=1), other, **export_settings(sample))
    info = subprocess.run([sys.executable, "-m", "unet_pipeline.cli", "info", str(first)], capture_output=True,
                          text=True)
    summary = json.loads(info.stdout)
    assert summary["weights"] == ["pytorch_state_dict", "torchscript"] and summary["model"]["depth"] == 1
    assert summary["inputs"][0]["axes"] == ["batch", "channel", "y", "x"]

    def verify(*packages):
        result = subprocess.run([sys.executable, "-m", "unet_pipeline.cli", "verify", *map(str, packages)],
                                capture_output=True, text=True)
        return result.returncode, json.loads(result.stdout)

    status, report = verify(first, again)
    assert status == 0 and report["identical"] and report["outputs"][0]["recorded"] == summary["weights_sha256"]
    assert verify(first, other)[0] == 1  # both intact, other weights
