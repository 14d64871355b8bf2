"""Sparse annotation: voxels of `ignore_label` carry no weight, count in no class balance, distance or metric.

Each claim is checked against an honest reference: the same computation on the annotated part alone (a crop
of the annotated half), or the loss over the annotated pixels computed by hand."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import COMPRESSION, evaluate_settings, probability_image, write_image

from unet_pipeline.core.errors import InputError
from unet_pipeline.nn.losses import soft_dice_loss, weighted_cross_entropy
from unet_pipeline.segmentation.cells import separate_cells
from unet_pipeline.stages.evaluate import evaluate
from unet_pipeline.stages.synth import synthetic_volume
from unet_pipeline.stages.weights import weights
from unet_pipeline.storage import ome_zarr

IGNORE = 65535
WEIGHTS = {"w0": 10.0, "sigma": 5.0, "class_balance": "balanced", "mode": "2d", "tolerance": 1e-3,
           "compression": COMPRESSION}


def half_ignored(labels: np.ndarray) -> np.ndarray:
    """uint16 labels whose right half (x >= 48) nobody annotated."""
    sparse = labels.astype(np.uint16)
    sparse[..., 48:] = IGNORE
    return sparse


def test_the_loss_of_a_mostly_unannotated_batch_is_the_loss_of_its_annotated_pixels():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 30, 30, generator=generator)
    target = torch.randint(0, 2, (2, 30, 30), generator=generator)
    weight = torch.rand(2, 30, 30, generator=generator) * 5 + 0.5
    ignored = torch.rand(2, 30, 30, generator=generator) < 0.7
    weight[ignored] = 0
    annotated = ~ignored
    by_hand = (F.cross_entropy(logits, target, reduction="none") * weight)[annotated].mean()
    assert 0.65 < ignored.float().mean() < 0.75
    assert torch.allclose(weighted_cross_entropy(logits, target, weight), by_hand, rtol=1e-6)
    cell = torch.softmax(logits, 1)[:, 1][annotated]
    truth = target[annotated].float()
    dice = 1 - (2 * (cell * truth).sum() + 1) / (cell.sum() + truth.sum() + 1)
    assert torch.allclose(soft_dice_loss(logits, target, weight), dice, rtol=1e-6)
    full = torch.ones_like(weight) * 2.0  # nothing ignored: exactly the plain mean
    assert torch.equal(weighted_cross_entropy(logits, target, full),
                       (F.cross_entropy(logits, target, reduction="none") * full).mean())


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_weights_of_a_half_annotated_volume_are_those_of_the_annotated_half_alone(tmp_path, mode):
    """The unannotated half gets weight 0, whatever it holds (here mostly membrane, which would pull the class
    balance); the annotated half gets exactly the weights of a volume made of it alone: the same class balance,
    and no cell of the other half in its separation-border distances."""
    _, labels = synthetic_volume((4, 64, 96), seed=4, cell_diameter=20)
    sparse = half_ignored(labels)
    full = write_image(tmp_path / "labels.ome.zarr", sparse, (1, 32, 32))
    crop = write_image(tmp_path / "crop.ome.zarr", labels[..., :48].astype(np.uint16), (1, 32, 32))
    settings = {**WEIGHTS, "mode": mode}
    weights(full, tmp_path / "w.ome.zarr", **settings, ignore_label=IGNORE)
    weights(crop, tmp_path / "w-crop.ome.zarr", **settings)
    got = ome_zarr.open_image(tmp_path / "w.ome.zarr")[:]
    alone = ome_zarr.open_image(tmp_path / "w-crop.ome.zarr")[:]
    ignored = sparse == IGNORE
    assert (got[ignored] == 0).all() and (got[~ignored] > 0).all()
    assert np.array_equal(got[..., :48], alone)
    balance = ome_zarr.image_attrs(tmp_path / "w.ome.zarr")["provenance"]["class_weights"]
    assert balance == ome_zarr.image_attrs(tmp_path / "w-crop.ome.zarr")["provenance"]["class_weights"]


def test_evaluate_on_a_half_annotated_volume_scores_the_annotated_half_alone(tmp_path, dask_cluster):
    """Every figure but the warping error and the thinned V_Rand (whose topology and thinning see past the
    annotated part) equals that of the annotated half cut out and scored on its own, with the sweep and the
    raw baseline."""
    raw, labels = synthetic_volume((3, 64, 96), seed=6, cell_diameter=20)
    rng = np.random.default_rng(0)
    true_cell = np.stack([separate_cells(s) for s in labels]) > 0
    cell = (true_cell * 0.6 + rng.random(labels.shape) * 0.4).astype(np.float32)  # imperfect: errors to score
    segmentation = np.stack([separate_cells((c > 0.5).astype(np.uint8)) for c in cell]).astype(np.uint32)
    images = {}
    for name, part in (("full", np.s_[...]), ("half", np.s_[..., :48])):
        given = half_ignored(labels) if name == "full" else labels[part].astype(np.uint16)
        images[name] = {"labels": write_image(tmp_path / f"{name}-labels.ome.zarr", given, (1, 32, 32)),
                        "raw": write_image(tmp_path / f"{name}-raw.ome.zarr", raw[part], (1, 32, 32)),
                        "seg": write_image(tmp_path / f"{name}-seg.ome.zarr", segmentation[part], (1, 32, 32)),
                        "p": probability_image(tmp_path / f"{name}-p.ome.zarr", cell[part], (1, 32, 32))}
    settings = evaluate_settings(dask_cluster, block=[1, 32, 32], thresholds=[0.3, 0.5, 0.7], warping=False)
    scores = {}
    for name, image in images.items():
        scores[name] = evaluate(image["seg"], image["p"], image["labels"], tmp_path / f"{name}.json",
                                **{**settings, "baseline_raw": str(image["raw"]),
                                   "ignore_label": IGNORE if name == "full" else None})
    full, half = scores["full"], scores["half"]
    for key in ("pixel_error", "rand_error", "rand_split", "rand_merge", "info_error", "variation_of_information",
                "membrane_dice", "membrane_jaccard", "rand_error_best_threshold"):
        assert full["model"][key] == pytest.approx(half["model"][key], abs=1e-12), key
    for ours, alone in zip(full["sweep"], half["sweep"], strict=True):
        assert ours == pytest.approx(alone, abs=1e-12)
    for key in ("threshold", "pixel_error", "rand_error", "info_error"):
        assert full["baseline_raw_threshold"][key] == pytest.approx(half["baseline_raw_threshold"][key], abs=1e-12)
    ignoring_nothing = evaluate(images["full"]["seg"], images["full"]["p"], images["full"]["labels"],
                                tmp_path / "naive.json", **settings)  # the 65535s as one big cell
    assert ignoring_nothing["model"]["pixel_error"] != full["model"]["pixel_error"]


def test_an_ignore_label_the_labels_cannot_hold_is_refused_naming_the_file(tmp_path):
    labels = write_image(tmp_path / "labels.ome.zarr", np.full((1, 16, 16), 3, np.uint8), (1, 16, 16))
    with pytest.raises(InputError, match=r"labels.ome.zarr: ignore_label 65535 cannot mark unannotated voxels of "
                                         r"labels of dtype uint8 \(expected 1 to 255"):
        weights(labels, tmp_path / "w.ome.zarr", **WEIGHTS, ignore_label=65535)
    import json

    done = subprocess.run([sys.executable, "-m", "unet_pipeline.cli", "weights", str(labels), str(tmp_path / "w2"),
                           "--settings", json.dumps({**WEIGHTS, "ignore_label": 300})], capture_output=True, text=True)
    assert done.returncode == 2 and "ignore_label 300 cannot mark" in done.stderr and "labels.ome.zarr" in done.stderr
    assert not (tmp_path / "w.ome.zarr").exists() and not (tmp_path / "w2").exists()
