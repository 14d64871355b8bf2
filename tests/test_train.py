"""Training: exact resume after SIGKILL, augmentation that keeps labels aligned, the recipe's parts."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from conftest import COMPRESSION, REPO, kill_process_group, write_image
from snakemake.utils import validate

from unet_pipeline.core.errors import ConfigError, InputError
from unet_pipeline.core.intensity import normalise
from unet_pipeline.nn import device_augment
from unet_pipeline.nn.augment import AugmentSettings, augment_tile, elastic_field, warp
from unet_pipeline.nn.checkpoint import load_model, select_device
from unet_pipeline.nn.device_augment import finish_batch
from unet_pipeline.nn.model_config import ModelConfig
from unet_pipeline.nn.unet import UNet
from unet_pipeline.segmentation.cells import cell_mask
from unet_pipeline.stages.preprocess import preprocess
from unet_pipeline.stages.synth import synthetic_volume
from unet_pipeline.stages.train import fast_layout, schedule_factor, train
from unet_pipeline.stages.weights import weights
from unet_pipeline.storage import ome_zarr, outputs
from unet_pipeline.storage.intensity_stats import intensity_range
from unet_pipeline.training.tiles import TileSource, batches, training_volumes
from unet_pipeline.workflow.stage_config import run_settings, stage_settings


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train-data")
    raw, labels = synthetic_volume((6, 96, 96), seed=3, cell_diameter=30)
    raw_image = write_image(folder / "raw.ome.zarr", raw, (1, 48, 48))
    preprocess(raw_image, folder / "intensity.json", low_percentile=0.5, high_percentile=99.5)
    labels_image = write_image(folder / "labels.ome.zarr", labels, (1, 48, 48))
    weights(labels_image, folder / "weights.ome.zarr", w0=10.0, sigma=5.0, class_balance="balanced", mode="2d",
            tolerance=1e-3, compression=COMPRESSION)
    return raw_image, folder / "intensity.json", labels_image, folder / "weights.ome.zarr"


def entries(data, *sections: list[int] | None, name: str = "v") -> list[dict]:
    """Training or validation entries of the one volume `data` (raw, intensity, labels, weights), one per
    sections."""
    image, intensity, labels, weights_path = map(str, data)
    return [{"volume": name, "image": image, "intensity": intensity, "labels": labels, "weights": weights_path,
             "sections": part, "weight": None} for part in sections]


def settings(data, sections=(0, 4), validation_sections=(4, 6), **changes) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["model"].update(depth=2, base_features=4, dropout=0.2)
    config["train"].update(iterations=20, tile=36, batch_size=2, validate_every=5, checkpoint_every=10,
                           loader_workers=1, threads=1, device="cpu")
    config["train"]["augment"]["elastic_probability"] = 1.0
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))  # and fill in the defaults
    config["train"].update(changes)  # after: a learning rate of 0 is the stage's to take, not the schema's
    given = {**stage_settings(config, "train"), **run_settings(config, "train")}
    return {**given, "training": entries(data, list(sections)),
            "validation": entries(data, list(validation_sections)) if validation_sections else []}


@pytest.mark.parametrize("validation_sections", [[4, 6], None], ids=["validated", "unvalidated"])
def test_sigkill_and_resume_gives_the_same_weights(tmp_path, data, validation_sections):
    """(Unvalidated: the data loader once drew its seed from the global RNG after the state was restored.)"""
    settings_ = settings(data, validation_sections=validation_sections)
    straight = tmp_path / "straight" / "checkpoint.pt"
    train(straight, tmp_path / "straight.csv", **settings_)

    killed = tmp_path / "killed" / "checkpoint.pt"
    command = [sys.executable, "-m", "unet_pipeline.cli", "train", str(killed),
               str(tmp_path / "killed.csv"), "--settings", json.dumps(settings_)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = killed.parent / "state" / "last.pt"
    deadline = time.monotonic() + 120
    while not state.exists():
        assert process.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.005)
    kill_process_group(process)
    assert not killed.exists(), "training finished before the kill: make the test slower"
    assert torch.load(state, weights_only=False)["iteration"] == 10

    outputs.set_on_busy("wait")  # as the rules do: the killed run's lock may outlive it for a moment
    try:
        train(killed, tmp_path / "killed.csv", **settings_)
    finally:
        outputs.set_on_busy("refuse")
    a, b = load_model(straight).state_dict(), load_model(killed).state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert (tmp_path / "straight.csv").read_text().count("\n") == (tmp_path / "killed.csv").read_text().count("\n")


def test_changed_settings_do_not_resume_a_stale_state(tmp_path, data):
    checkpoint = tmp_path / "model" / "checkpoint.pt"
    train(checkpoint, tmp_path / "log.csv", **settings(data, iterations=10))
    train(checkpoint, tmp_path / "log.csv", **settings(data, iterations=10, learning_rate=0.01))
    fresh = tmp_path / "fresh" / "checkpoint.pt"
    train(fresh, tmp_path / "fresh.csv", **settings(data, iterations=10, learning_rate=0.01))
    a, b = load_model(checkpoint).state_dict(), load_model(fresh).state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_log_has_validation_and_the_best_checkpoint_is_kept(tmp_path, data):
    checkpoint = tmp_path / "model" / "checkpoint.pt"
    train(checkpoint, tmp_path / "log.csv", **settings(data, iterations=10, loader_workers=0))
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].split(",")[-3:] == ["val_loss", "val_pixel_error", "val_rand_error"]
    validated = [r.split(",") for r in rows[1:] if r.split(",")[-1]]
    assert [int(r[0]) for r in validated] == [5, 10]
    best = torch.load(checkpoint, weights_only=True)["best"]
    assert best["val_rand_error"] == min(float(r[-1]) for r in validated)


def test_elastic_deformation_keeps_labels_aligned_and_integral():
    _, labels = synthetic_volume((1, 120, 120), seed=7, cell_diameter=30)
    image = np.where(cell_mask(labels), 0.9, 0.1).astype(np.float32)  # unambiguous raw: cells bright
    rng = np.random.default_rng(0)
    field = elastic_field((120, 120), 3, 10.0, rng)
    assert 3 < np.abs(field).max() < 60
    warped_image, warped_labels = warp(image, field, 1), warp(labels, field, 0)
    assert set(np.unique(warped_labels)) <= set(np.unique(labels))
    bright, dark = warped_image > 0.85, warped_image < 0.15
    assert bright.sum() > 5000 and dark.sum() > 500
    assert (warped_labels[bright] > 0).all() and (warped_labels[dark] == 0).all()
    assert not np.array_equal(warped_labels, labels)


def test_augmentation_is_deterministic_per_seed_and_moves_all_arrays_alike():
    _, labels = synthetic_volume((1, 64, 64), seed=1, cell_diameter=20)
    image = labels.astype(np.float32) / labels.max()
    weight = image * 3
    settings = AugmentSettings(elastic_probability=1.0, contrast=0, brightness=0, gamma=0, noise=0)
    first = augment_tile(image, labels, weight, settings, np.random.default_rng(5))
    again = augment_tile(image, labels, weight, settings, np.random.default_rng(5))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    warped_image, warped_labels, warped_weight = first
    assert np.allclose(warped_weight, warped_image * 3, atol=1e-5)
    exact = np.isclose(warped_image * labels.max(), np.round(warped_image * labels.max()), atol=1e-4)
    assert np.array_equal(np.round(warped_image * labels.max())[exact], warped_labels[exact])


def test_schedules():
    assert schedule_factor("constant", 50, 100, 10, 0.5) == 1.0
    assert schedule_factor("step", 25, 100, 10, 0.5) == 0.25
    assert schedule_factor("cosine", 0, 100, 10, 0.5) == 1.0 and schedule_factor("cosine", 100, 100, 10, 0.5) < 1e-12


def test_a_3d_model_trains_on_3d_tiles(tmp_path, data):
    model = {"ndim": 3, "depth": 1, "base_features": 2, "growth": 2, "classes": 2, "dropout": 0.0,
             "padding": "valid", "norm": "group"}
    options = settings(data, iterations=3, tile=4, sections=[0, 6], validation_sections=None, loader_workers=0)
    options["model"] = model
    options["augment"].update(misalign_probability=1.0, misalign_max_shift=2, missing_probability=1.0)
    train(tmp_path / "m" / "checkpoint.pt", tmp_path / "log.csv", **options)
    network = load_model(tmp_path / "m" / "checkpoint.pt")
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert len(rows) == 3 and all(np.isfinite(float(row["loss"])) and float(row["loss"]) > 0 for row in rows)
    geometry = network.config.geometry
    output = geometry.smallest_output_at_least(4)
    tile = torch.rand(1, 1, *(geometry.input_size(output),) * 3)
    assert network(tile).shape == (1, 2, output, output, output)  # a 3D network: valid sizes on every axis


def test_device_warp_equals_the_loader_warp():
    """grid_sample on the training device against scipy's map_coordinates in the loader, on one field."""
    _, labels = synthetic_volume((2, 96, 80), seed=2, cell_diameter=24)
    image = np.random.default_rng(1).random(labels.shape, dtype=np.float32)
    field = elastic_field((96, 80), 3, 10.0, np.random.default_rng(4))
    fields = torch.from_numpy(np.stack([field, field])).float()
    on_device = device_augment.warp(torch.from_numpy(image), fields, nearest=False).numpy()
    assert np.abs(on_device - warp(image, field, 1)).max() < 1e-4
    ids = device_augment.warp(torch.from_numpy(labels.astype(np.int32)), fields, nearest=True).round().numpy()
    assert np.mean(ids != warp(labels, field, 0)) < 1e-3  # ties at exactly half a pixel may round apart
    assert np.array_equal(device_augment.cell_mask(torch.from_numpy(labels.astype(np.int64)), 3).numpy(),
                          cell_mask(labels))


@pytest.mark.parametrize("ndim", [2, 3])
def test_batches_deformed_on_the_device_equal_those_deformed_in_the_loader(data, ndim):
    """With the other augmentations off, both places give the same tiles (up to interpolation rounding):
    same field, same crop, same target from the deformed labels."""
    config = ModelConfig(ndim=ndim, depth=1, base_features=2)
    still = AugmentSettings(elastic_probability=1.0, flips=False, contrast=0, brightness=0, gamma=0, noise=0)
    made = {}
    for place in ("loader", "device"):
        source = TileSource(training_volumes(entries(data, [0, 6]), "training"), config.geometry,
                            8 if ndim == 3 else 20, 3, 0.5,
                            dataclasses.replace(still, elastic_on=place), seed=9)
        batch = next(iter(batches(source, 0, 1, 0)))
        made[place] = batch if place == "loader" else finish_batch(*batch, source.device_margin)
    (image, target, weight), (image_d, target_d, weight_d) = made["loader"], made["device"]
    assert image.shape == image_d.shape and target.shape == target_d.shape and weight.shape == weight_d.shape
    assert torch.abs(image - image_d).max() < 1e-4 and torch.abs(weight - weight_d).max() < 1e-3
    assert (target != target_d).float().mean() < 2e-3 and 0 < target.float().mean() < 1


@pytest.mark.parametrize("ndim", [2, 3])
def test_the_cuda_layout_fits_the_model(ndim):
    """Channels-last needs rank-4 tensors; a 3D model takes its 3D form (checked on CPU tensors: the format
    is the same on a GPU)."""
    layout = fast_layout(torch.device("cuda"), ndim)
    assert fast_layout(torch.device("cpu"), ndim) is None
    network = UNet(ModelConfig(ndim=ndim, depth=1, base_features=2)).to(memory_format=layout)
    plain = torch.rand(2, 1, *([20] * ndim))
    image = plain.contiguous(memory_format=layout)
    assert image.is_contiguous(memory_format=layout)
    output = network.config.geometry.output_size(20)
    assert network(image).shape == (2, 2, *[output] * ndim)
    assert torch.allclose(network(image), network(plain), atol=1e-6)  # the layout changes no value


def test_cuda_without_a_gpu_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    with pytest.raises(ConfigError, match="device 'cuda' was requested but torch sees no CUDA device"):
        select_device("cuda")
    assert select_device("auto").type == "cpu"


def test_fine_tuning_starts_from_the_source_weights_with_a_fresh_optimiser(tmp_path, data):
    """With a learning rate of 0, the first validation of a run initialised from a checkpoint scores exactly
    what the source checkpoint scored on the same sections: the weights were loaded and nothing else moved."""
    source = tmp_path / "source" / "checkpoint.pt"
    train(source, tmp_path / "source.csv", **settings(data, iterations=10, validate_every=10, loader_workers=0))
    source_validation = list(csv.DictReader((tmp_path / "source.csv").open()))[-1]
    tuned = tmp_path / "tuned" / "checkpoint.pt"
    options = settings(data, iterations=5, validate_every=5, loader_workers=0, learning_rate=0.0,
                       init_from=str(source))
    train(tuned, tmp_path / "tuned.csv", **options)
    first_validation = list(csv.DictReader((tmp_path / "tuned.csv").open()))[-1]
    for key in ("val_loss", "val_pixel_error", "val_rand_error"):
        assert float(first_validation[key]) == float(source_validation[key]), key
    a, b = load_model(source).state_dict(), load_model(tuned).state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert torch.load(tuned, weights_only=True)["provenance"]["init_from"]["weights_sha256"] == \
        torch.load(source, weights_only=True)["weights_sha256"]


def test_fine_tuning_from_another_architecture_names_the_keys(tmp_path, data, random_checkpoint):
    other = random_checkpoint(base_features=8, depth=2)  # the run's model has 4 features
    with pytest.raises(ConfigError, match=r"train.init_from .*model-0-8.*: its model differs from the config's "
                                          r"model block in base_features \(8 there, 4 here\)"):
        train(tmp_path / "m" / "checkpoint.pt", tmp_path / "log.csv",
              **settings(data, iterations=2, loader_workers=0, init_from=str(other)))
    assert not (tmp_path / "m" / "checkpoint.pt").exists()
    missing = tmp_path / "nope.pt"
    with pytest.raises(InputError, match="nope.pt"):
        train(tmp_path / "m" / "checkpoint.pt", tmp_path / "log.csv",
              **settings(data, iterations=2, loader_workers=0, init_from=str(missing)))


def test_tiles_normalised_as_read_equal_tiles_of_the_normalised_copy(tmp_path, data):
    """Training reads raw and normalises each tile with preprocess's statistics: the batches (augmented) are
    exactly those of the float32 copy the chain used to write."""
    raw, intensity = data[0], data[1]
    low, high = intensity_range(intensity)
    copy = write_image(tmp_path / "norm.ome.zarr", normalise(ome_zarr.open_image(raw)[:], low, high), (1, 48, 48))
    config = ModelConfig(depth=1, base_features=2)
    made = []
    for entry in (entries(data, [0, 6])[0], {**entries(data, [0, 6])[0], "image": str(copy), "intensity": None}):
        source = TileSource(training_volumes([entry], "training"), config.geometry, 20, 2, 0.5, AugmentSettings(),
                            seed=4)
        made.append([batch for batch in batches(source, 0, 3, 0)])
    for fly, stored in zip(*made):
        assert all(torch.equal(a, b) for a, b in zip(fly, stored))


def test_tiles_are_drawn_across_volumes_by_share(tmp_path, data):
    """Two volumes told apart by their intensity (0 and 1, nothing augmented): the share of tiles from each
    follows the entries' weights, and by default their voxels (6 sections against 2)."""
    bright = write_image(tmp_path / "bright.ome.zarr", np.ones((6, 96, 96), np.float32), (1, 48, 48))
    config = ModelConfig(depth=1, base_features=2)
    still = AugmentSettings(elastic_probability=0, flips=False, contrast=0, brightness=0, gamma=0, noise=0)
    dark_entry = entries(data, [0, 6], name="dark")[0]
    bright_entry = {**entries(data, [0, 2], name="bright")[0], "image": str(bright), "intensity": None}
    for given, expected in (((None, None), 0.75), ((1.0, 3.0), 0.25)):
        volumes = training_volumes([{**dark_entry, "weight": given[0]}, {**bright_entry, "weight": given[1]}],
                                   "training")
        assert [v.share for v in volumes] == pytest.approx([expected, 1 - expected])
        source = TileSource(volumes, config.geometry, 20, 4, 0.0, still, seed=3)
        means = torch.cat([batch[0].mean(dim=(1, 2, 3)) for batch in batches(source, 0, 100, 0)])
        dark_share = float((means < 0.99).float().mean())  # the synthetic image's tiles are never all 1
        assert abs(dark_share - expected) < 0.07, (given, dark_share)  # 400 tiles: 3.5 standard deviations


def test_validation_pools_its_volumes_and_logs_each(tmp_path, data):
    options = settings(data, iterations=4, validate_every=4, loader_workers=0)
    options["validation"] = entries(data, [4, 5], name="first") + entries(data, [5, 6], name="second")
    train(tmp_path / "m" / "checkpoint.pt", tmp_path / "log.csv", **options)
    row = list(csv.DictReader((tmp_path / "log.csv").open()))[-1]
    for key in ("val_loss", "val_pixel_error"):  # one section each: the pooled figure is their mean
        assert float(row[key]) == pytest.approx((float(row[f"{key}_first"]) + float(row[f"{key}_second"])) / 2)
    assert float(row["val_rand_error"]) >= 0 and "val_rand_error_first" in row
