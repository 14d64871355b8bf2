"""Provenance that confirms a reproduction: content fingerprints, weight hashes, the dirty-tree flag, `verify`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zarr
from conftest import COMPRESSION, REPO, probability_image, segment_settings, write_image
from test_predict import run_predict
from test_segment import cells_probability

from unet_pipeline.nn.checkpoint import save_checkpoint
from unet_pipeline.nn.model_config import ModelConfig
from unet_pipeline.nn.unet import UNet
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.segment import segment
from unet_pipeline.storage import chunk_hashes, ome_zarr

INGEST = {"chunks": (1, 32, 32), "compression": COMPRESSION, "voxel_size": (50.0, 4.0, 4.0), "unit": "nanometer",
          "in_place": False}  # a copy, with its chunk hashes


def verify(*paths) -> tuple[int, dict]:
    result = subprocess.run([sys.executable, "-m", "unet_pipeline.cli", "verify", *map(str, paths)],
                            capture_output=True, text=True)
    return result.returncode, json.loads(result.stdout) if result.stdout else {}


def raw_image(path, seed=0):
    volume = np.random.default_rng(seed).integers(0, 4096, (3, 64, 64), dtype=np.uint16)
    return write_image(path, volume, (1, 32, 32))


def test_two_byte_identical_runs_get_the_same_fingerprints_and_verify_says_identical(tmp_path):
    raw = raw_image(tmp_path / "raw.ome.zarr")
    ingest("raw", raw, tmp_path / "a.ome.zarr", **INGEST)
    time.sleep(0.01)
    ingest("raw", raw, tmp_path / "b.ome.zarr", **{**INGEST, "compression": {**COMPRESSION, "level": 1}})
    a, b = (ome_zarr.image_attrs(tmp_path / f"{name}.ome.zarr")["provenance"] for name in "ab")
    assert a["content_sha256"] == b["content_sha256"] is not None  # same values, another codec level
    assert a["finished"] <= b["finished"] and a["input_fingerprints"] == b["input_fingerprints"]
    status, report = verify(tmp_path / "a.ome.zarr", tmp_path / "b.ome.zarr")
    assert status == 0 and report["identical"] and all(o["intact"] for o in report["outputs"])
    ingest("raw", raw_image(tmp_path / "other.ome.zarr", seed=1), tmp_path / "c.ome.zarr", **INGEST)
    status, report = verify(tmp_path / "a.ome.zarr", tmp_path / "c.ome.zarr")
    assert status == 1 and not report["identical"]


@pytest.mark.parametrize("damage", ["deleted", "corrupt", "changed"])
@pytest.mark.parametrize("level,chunks,index", [("0", (1, 32, 32), (1, 0, 1)), ("1", (1, 16, 16), (2, 1, 0))],
                         ids=["level-0", "pyramid-level-1"])
def test_verify_names_a_missing_damaged_or_changed_chunk_of_any_level(tmp_path, damage, level, chunks, index):
    output = tmp_path / "copy.ome.zarr"
    ingest("raw", raw_image(tmp_path / "raw.ome.zarr"), output, **{**INGEST, "chunks": chunks})
    array = zarr.open_array(str(output / level), mode="r+")
    assert verify(output)[0] == 0
    chunk = output / level / "/".join(map(str, index))
    if damage == "deleted":
        chunk.unlink()
    elif damage == "corrupt":
        chunk.write_bytes(b"\x02\x01 not a blosc frame")
    else:
        region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, array.chunks))
        array[region] = array[region] + 1  # a valid chunk with other values
    status, report = verify(output)
    found = report["outputs"][0]
    field = {"deleted": "missing", "corrupt": "damaged", "changed": "changed"}[damage]
    assert status == 2 and not found["intact"] and found[field] == [f"{level}/{'/'.join(map(str, index))}"], found


@pytest.mark.parametrize("edit", ["scale", "translation", "axes", "fingerprint"])
def test_verify_catches_edited_metadata_and_an_edited_fingerprint(tmp_path, edit):
    output = tmp_path / "copy.ome.zarr"
    ingest("raw", raw_image(tmp_path / "raw.ome.zarr"), output, **INGEST)
    attributes = output / ".zattrs"
    attrs = json.loads(attributes.read_text())
    datasets = attrs["multiscales"][0]["datasets"]
    if edit == "scale":
        datasets[0]["coordinateTransformations"][0]["scale"][1] *= 2
    elif edit == "translation":
        datasets[1]["coordinateTransformations"][1]["translation"][2] += 1.0
    elif edit == "axes":
        attrs["multiscales"][0]["axes"][1]["unit"] = "micrometer"
    else:
        attrs["provenance"]["content_sha256"] = "0" * 64
    attributes.write_text(json.dumps(attrs))
    status, report = verify(output)
    found = report["outputs"][0]
    assert status == 2 and not found["intact"] and not (found["missing"] or found["damaged"] or found["changed"])
    if edit == "fingerprint":
        assert not found["provenance_matches"] and found["metadata_changed"] == []
    else:
        assert found["metadata_changed"] == [{"axes": "axes"}.get(edit, "datasets")] and found["provenance_matches"]


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_verify_names_a_damaged_checkpoint_with_exit_2(tmp_path, random_checkpoint, damage):
    checkpoint = random_checkpoint()
    content = checkpoint.read_bytes()
    checkpoint.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"")
    result = subprocess.run([sys.executable, "-m", "unet_pipeline.cli", "verify", str(checkpoint)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{checkpoint}: the checkpoint cannot be read, it is truncated or damaged" in result.stderr


def test_weight_hashes_match_for_bit_identical_weights_in_different_files(tmp_path):
    torch.manual_seed(0)
    model = UNet(ModelConfig(depth=1, base_features=4))
    save_checkpoint(tmp_path / "a.pt", model, provenance={"finished": "2026-01-01"})
    save_checkpoint(tmp_path / "b.pt", model, provenance={"finished": "2026-02-02"})
    assert (tmp_path / "a.pt").read_bytes() != (tmp_path / "b.pt").read_bytes()
    status, report = verify(tmp_path / "a.pt", tmp_path / "b.pt")
    assert status == 0 and report["identical"]
    with torch.no_grad():
        next(model.parameters())[0] += 1
    save_checkpoint(tmp_path / "c.pt", model)
    assert verify(tmp_path / "a.pt", tmp_path / "c.pt")[0] == 1


def test_predict_records_weights_and_threads_and_keeps_work_of_a_resaved_checkpoint(tmp_path, random_checkpoint):
    image = write_image(tmp_path / "norm.ome.zarr", np.random.default_rng(2).random((1, 64, 64), np.float32),
                        (1, 32, 32))
    checkpoint = random_checkpoint()
    run_predict(image, checkpoint, tmp_path / "p.ome.zarr")
    record = ome_zarr.image_attrs(tmp_path / "p.ome.zarr")["provenance"]
    stored = torch.load(checkpoint, weights_only=True)
    assert record["weights_sha256"] == stored["weights_sha256"] and record["settings"]["torch_threads"] == 1
    resaved = tmp_path / "resaved.pt"
    torch.save({**stored, "provenance": {"note": "copied elsewhere"}}, resaved)
    assert run_predict(image, resaved, tmp_path / "p.ome.zarr")["computed"] == 0  # same weights: kept
    assert verify(tmp_path / "p.ome.zarr")[0] == 0


def test_segment_output_has_a_complete_manifest(tmp_path, dask_cluster):
    probabilities = probability_image(tmp_path / "p.ome.zarr", cells_probability((2, 96, 96), 3), (1, 32, 32))
    out = tmp_path / "s.ome.zarr"
    segment(probabilities, out, **segment_settings(dask_cluster, block=[1, 48, 48], context=[0, 16, 16]))
    manifest = chunk_hashes.manifest(out)
    assert len(manifest["chunk_hashes"]) == 2 * 3 * 3
    assert ome_zarr.image_attrs(out)["provenance"]["content_sha256"] == manifest["fingerprint"]
    assert verify(out)[0] == 0


def test_the_dirty_tree_flag_follows_uncommitted_changes(tmp_path):
    shutil.copytree(REPO / "unet_pipeline", tmp_path / "unet_pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], check=True)
    probe = [sys.executable, "-c", "from unet_pipeline.storage import provenance; print(provenance.git_dirty())"]

    def dirty() -> str:
        return subprocess.run(probe, cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()

    assert dirty() == "False"
    (tmp_path / "unet_pipeline" / "stages" / "synth.py").write_text("# changed\n", encoding="utf-8")
    assert dirty() == "True"
