"""Shared fixtures: small synthetic OME-Zarr images and tiny trained-or-random models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unet_pipeline import io
from unet_pipeline.model import ModelConfig, UNet, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO.parent / "shared" / "data" / "isbi2012"
COMPRESSION = {"codec": "blosc", "cname": "zstd", "level": 5, "shuffle": "bit"}


def write_image(path: Path, volume: np.ndarray, chunks: tuple[int, ...]) -> Path:
    io.create_image(path, volume.shape, volume.dtype, chunks, COMPRESSION, (50.0, 4.0, 4.0), "nanometer",
                    path.name)[:] = volume
    return path


@pytest.fixture
def random_checkpoint(tmp_path: Path):
    """Factory: a checkpoint of a randomly initialised U-Net of the given depth and width."""

    def make(seed: int = 0, base_features: int = 4, **config) -> Path:
        torch.manual_seed(seed)
        path = tmp_path / f"model-{seed}-{base_features}-{'-'.join(f'{k}{v}' for k, v in sorted(config.items()))}.pt"
        save_checkpoint(path, UNet(ModelConfig(base_features=base_features, **config)))
        return path

    return make
