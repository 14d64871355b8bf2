"""Overlap-tile inference equals the network run once on the whole mirror-padded volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import predict_settings, write_image

from unet_pipeline.core.errors import InputError
from unet_pipeline.core.intensity import normalise
from unet_pipeline.distributed import cluster
from unet_pipeline.nn.checkpoint import load_model
from unet_pipeline.nn.model_config import ModelConfig
from unet_pipeline.stages.predict import _tile_bytes, auto_tile, predict
from unet_pipeline.stages.preprocess import preprocess
from unet_pipeline.storage import intensity_stats, ome_zarr, outputs


def run_predict(image, checkpoint, output, workers=1, **options):
    return predict(image, checkpoint, output, **predict_settings(workers, **options))


def whole_volume_reference(model, volume: np.ndarray, tta: bool = False) -> np.ndarray:
    """numpy reflect-pads the whole volume to one valid input and runs one forward pass (per flip with TTA)."""
    geometry, ndim = model.config.geometry, model.config.ndim
    axes = volume.shape[-ndim:]
    outputs = [geometry.smallest_output_at_least(n) for n in axes]
    halo = geometry.halo
    pad = [(0, 0)] * (3 - ndim) + [(halo, o - n + halo) for n, o in zip(axes, outputs)]
    padded = torch.from_numpy(np.pad(volume, pad, mode="reflect").astype(np.float32))
    padded = padded[:, None] if ndim == 2 else padded[None, None]
    flips = [(fy, fx, sw) for fy in (0, 1) for fx in (0, 1) for sw in (0, 1)] if tta else [(0, 0, 0)]
    total = 0
    with torch.inference_mode():
        for fy, fx, sw in flips:
            x = padded.flip(-2) if fy else padded
            x = x.flip(-1) if fx else x
            x = x.transpose(-1, -2) if sw else x
            y = torch.softmax(model(x), dim=1)
            if model.config.padding == "same":
                y = y[(..., *(slice(halo, -halo) for _ in range(ndim)))]
            y = y.transpose(-1, -2) if sw else y
            y = y.flip(-1) if fx else y
            total = total + (y.flip(-2) if fy else y)
    probs = (total / len(flips)).numpy()
    probs = probs.transpose(1, 0, 2, 3) if ndim == 2 else probs[0]
    return probs[(slice(None), slice(None), *(slice(0, n) for n in axes[-2:]))][:, : volume.shape[0]]


CASES = [
    # shape, chunks, tile, model, workers, batch_tiles
    ((3, 45, 37), (1, 16, 16), (1, 32, 16), dict(depth=2), 1, 1),
    ((2, 70, 51), (2, 24, 16), (2, 48, 48), dict(depth=3), 2, 2),
    ((1, 9, 5), (1, 8, 8), (1, 8, 8), dict(depth=2), 1, 3),  # halo far larger than the volume
    ((2, 41, 30), (1, 16, 16), (1, 16, 32), dict(depth=2, padding="same"), 2, 1),
    ((7, 26, 19), (4, 8, 8), (4, 16, 8), dict(depth=1, ndim=3), 2, 2),  # 3D, anisotropic tiles
    ((5, 20, 20), (2, 12, 12), (4, 12, 24), dict(depth=2, ndim=3, padding="same"), 1, 1),
]


@pytest.mark.parametrize("shape,chunks,tile,model,workers,batch_tiles", CASES)
def test_tiled_equals_whole_volume(tmp_path, random_checkpoint, shape, chunks, tile, model, workers, batch_tiles):
    volume = np.random.default_rng(3).random(shape).astype(np.float32)
    image = write_image(tmp_path / "norm.ome.zarr", volume, chunks)
    checkpoint = random_checkpoint(**model)
    output = tmp_path / "probabilities.ome.zarr"
    stats = run_predict(image, checkpoint, output, workers=workers, tile=list(tile), batch_tiles=batch_tiles)
    tiled = ome_zarr.open_image(output)[:]
    expected = whole_volume_reference(load_model(checkpoint), volume)
    assert tiled.shape == (2, *shape)
    assert np.abs(tiled - expected).max() <= 1e-5
    assert stats["computed"] == stats["tiles"] > 1 and stats["resumed"] == 0
    assert not outputs.partial_path(output).exists()
    attrs = ome_zarr.image_attrs(output)
    assert attrs["provenance"]["tiles"] == stats and ome_zarr.voxel_size(output) == ([50.0, 4.0, 4.0], "nanometer")


def test_normalising_each_tile_equals_predicting_the_normalised_copy(tmp_path, random_checkpoint):
    """Raw uint8 with preprocess's statistics, normalised tile by tile (mirrored halos included), gives exactly
    the probabilities of the float32 copy the chain used to write."""
    raw = np.random.default_rng(6).integers(0, 256, size=(2, 45, 38)).astype(np.uint8)
    raw_image = write_image(tmp_path / "raw.ome.zarr", raw, (1, 16, 16))
    preprocess(raw_image, tmp_path / "intensity.json", low_percentile=2.0, high_percentile=97.0)
    low, high = intensity_stats.intensity_range(tmp_path / "intensity.json")
    copy = write_image(tmp_path / "norm.ome.zarr", normalise(raw, low, high), (1, 16, 16))
    checkpoint = random_checkpoint(depth=2)
    run_predict(raw_image, checkpoint, tmp_path / "fly.ome.zarr", intensity=str(tmp_path / "intensity.json"))
    run_predict(copy, checkpoint, tmp_path / "copy.ome.zarr")
    assert np.array_equal(ome_zarr.open_image(tmp_path / "fly.ome.zarr")[:],
                          ome_zarr.open_image(tmp_path / "copy.ome.zarr")[:])
    provenance = ome_zarr.image_attrs(tmp_path / "fly.ome.zarr")["provenance"]
    assert provenance["intensity_range"] == [low, high] and provenance["input_fingerprints"]["intensity"]


def test_test_time_augmentation_equals_whole_volume_average(tmp_path, random_checkpoint):
    volume = np.random.default_rng(4).random((2, 37, 29)).astype(np.float32)
    image = write_image(tmp_path / "norm.ome.zarr", volume, (1, 16, 16))
    checkpoint = random_checkpoint(depth=2)
    output = tmp_path / "p.ome.zarr"
    run_predict(image, checkpoint, output, tile=[1, 16, 32], tta=True)
    expected = whole_volume_reference(load_model(checkpoint), volume, tta=True)
    plain = whole_volume_reference(load_model(checkpoint), volume)
    tiled = ome_zarr.open_image(output)[:]
    assert np.abs(tiled - expected).max() <= 1e-5
    assert np.abs(tiled - plain).max() > 1e-3  # the augmentation really changed something


def test_uint8_storage_and_bf16_autocast_stay_close(tmp_path, random_checkpoint):
    volume = np.random.default_rng(5).random((1, 30, 30)).astype(np.float32)
    image = write_image(tmp_path / "norm.ome.zarr", volume, (1, 16, 16))
    checkpoint = random_checkpoint(depth=2)
    expected = whole_volume_reference(load_model(checkpoint), volume)
    run_predict(image, checkpoint, tmp_path / "u8.ome.zarr", dtype="uint8")
    stored = ome_zarr.open_image(tmp_path / "u8.ome.zarr")[:]
    assert stored.dtype == np.uint8 and np.abs(stored / 255 - expected).max() <= 0.5 / 255 + 1e-6
    run_predict(image, checkpoint, tmp_path / "bf16.ome.zarr", amp="bf16")
    assert np.abs(ome_zarr.open_image(tmp_path / "bf16.ome.zarr")[:] - expected).max() < 0.05


def test_a_failing_tile_stops_the_run_naming_it(tmp_path, random_checkpoint):
    volume = np.random.default_rng(6).random((2, 32, 32)).astype(np.float32)
    image = write_image(tmp_path / "norm.ome.zarr", volume, (1, 16, 16))
    (image / "0" / "1" / "1" / "0").write_bytes(b"corrupt chunk")  # section 1, y block 1, x block 0
    output = tmp_path / "p.ome.zarr"
    message = r"tile Box\(start=\(1, .*: .*norm.ome.zarr/0: chunk file 1/1/0 cannot be read \(.*decompression"
    with pytest.raises(InputError, match=message):
        run_predict(image, random_checkpoint(depth=1), output, tile=[1, 16, 16])
    assert not output.exists()


def test_auto_tile_is_the_largest_within_budget():
    config = ModelConfig(depth=2, base_features=8)
    small = auto_tile(config, (1, 16, 16), (4, 512, 512), 32 << 20, 1)
    large = auto_tile(config, (1, 16, 16), (4, 512, 512), 256 << 20, 1)
    geometry = config.geometry
    grown = (1, small[1] + 16, small[2] + 16)
    assert _tile_bytes(config, geometry, small, 1) <= 32 << 20 < _tile_bytes(config, geometry, grown, 1)
    assert large[1] > small[1] and all(t % 16 == 0 for t in large[1:])
    assert auto_tile(config, (1, 16, 16), (1, 40, 40), 1 << 40, 1) == (1, 48, 48)  # capped at the volume


def test_gpu_cluster_pins_one_worker_per_gpu():
    """The local GPU cluster spec (real worker processes; CUDA itself is not needed to check the pinning)."""
    with cluster.gpu_cluster(["0", "1"]) as spec, cluster.Client(spec) as client:
        client.wait_for_workers(2)
        seen = client.run(lambda: __import__("os").environ["CUDA_VISIBLE_DEVICES"])
        assert sorted(seen.values()) == ["0", "1"]
        assert cluster.gpu_workers(client) == 2


def test_the_probability_pyramid_is_built_on_the_cluster_and_equals_downsampling(tmp_path, random_checkpoint):
    from unet_pipeline.storage.pyramid import downsample, level_factors

    volume = np.random.default_rng(6).random((2, 96, 80)).astype(np.float32)
    image = write_image(tmp_path / "norm.ome.zarr", volume, (1, 16, 16))
    output = tmp_path / "p.ome.zarr"
    run_predict(image, random_checkpoint(depth=2), output, workers=2, tile=[1, 32, 32])
    steps = level_factors((50.0, 4.0, 4.0), volume.shape, (1, 16, 16))
    datasets = ome_zarr.image_attrs(output)["multiscales"][0]["datasets"]
    assert len(datasets) == len(steps) + 1 >= 3
    level = ome_zarr.open_image(output)[:]
    for dataset, step in zip(datasets[1:], steps):
        level = downsample(level, (1, *step), "mean")
        assert np.array_equal(ome_zarr.zarr.open_array(str(output / dataset["path"]), mode="r")[:], level)
