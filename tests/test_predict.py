"""Overlap-tile inference equals the network run once on the whole mirror-padded volume."""

import numpy as np
import pytest
import torch

from conftest import COMPRESSION, write_image
from unet_pipeline import io
from unet_pipeline.model import load_model
from unet_pipeline.predict import predict


def whole_volume_reference(model, volume: np.ndarray) -> np.ndarray:
    """Each section padded by numpy's reflect mode to one big valid input; one forward pass."""
    geometry = model.config.geometry
    _, height, width = volume.shape
    out_y, out_x = geometry.smallest_output_at_least(height), geometry.smallest_output_at_least(width)
    halo = geometry.halo
    padded = np.pad(volume, ((0, 0), (halo, out_y - height + halo), (halo, out_x - width + halo)), mode="reflect")
    with torch.inference_mode():
        logits = model(torch.from_numpy(padded.astype(np.float32))[:, None])
    probs = torch.softmax(logits, dim=1).transpose(0, 1).numpy()
    return probs[:, :, :height, :width]


@pytest.mark.parametrize(
    "shape,chunks,tile,depth,workers",
    [
        ((3, 45, 37), (1, 16, 16), (1, 32, 16), 2, 1),
        ((2, 70, 51), (2, 24, 16), (2, 48, 48), 3, 2),
        ((1, 9, 5), (1, 8, 8), (1, 8, 8), 2, 1),  # halo far larger than the volume
    ],
)
def test_tiled_equals_whole_volume(tmp_path, random_checkpoint, shape, chunks, tile, depth, workers):
    volume = np.random.default_rng(3).random(shape).astype(np.float32)
    image = write_image(tmp_path / "norm.ome.zarr", volume, chunks)
    checkpoint = random_checkpoint(depth=depth)
    output = tmp_path / "probabilities.ome.zarr"
    predict(image, checkpoint, output, tile=list(tile), dtype="float32", device="cpu", torch_threads=1,
            compression=COMPRESSION,
            cluster_settings={"kind": "local", "workers": workers, "threads_per_worker": 1})
    tiled = io.open_image(output)[:]
    expected = whole_volume_reference(load_model(checkpoint), volume)
    assert tiled.shape == (2, *shape)
    assert np.abs(tiled - expected).max() <= 1e-5
    assert not (tmp_path / "probabilities.ome.zarr.partial").exists()
    assert io.voxel_size(output) == ([50.0, 4.0, 4.0], "nanometer")
