"""The model applied to in-memory tiles: batching, mixed precision, test-time augmentation.

Numpy in, numpy out; no I/O and no scheduling. A batch holds N input tiles of
one shape; the result holds the class probabilities of the exact (cropped)
output region of each.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Iterator

import numpy as np
import torch

from ..core.errors import ConfigError
from ..core.geometry import plan_tiles, tile_shape
from .mirror import read_mirrored
from .unet import UNet, center_crop

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "none":
        return contextlib.nullcontext()
    if amp not in AMP_DTYPES:
        raise ConfigError(f"amp must be 'none', 'bf16' or 'fp16', got {amp!r}")
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def dihedral_transforms() -> Iterator[tuple[bool, bool, bool]]:
    """(flip y, flip x, swap y and x): the 8 symmetries of the square, identity first."""
    return itertools.product((False, True), repeat=3)


def _transform(tensor: torch.Tensor, flip_y: bool, flip_x: bool, swap: bool) -> torch.Tensor:
    if flip_y:
        tensor = tensor.flip(-2)
    if flip_x:
        tensor = tensor.flip(-1)
    return tensor.transpose(-1, -2) if swap else tensor


def _inverse(tensor: torch.Tensor, flip_y: bool, flip_x: bool, swap: bool) -> torch.Tensor:
    if swap:
        tensor = tensor.transpose(-1, -2)
    if flip_x:
        tensor = tensor.flip(-1)
    return tensor.flip(-2) if flip_y else tensor


def forward_probabilities(model: UNet, batch: np.ndarray, output_shape: tuple[int, ...], amp: str = "none",
                          tta: bool = False) -> np.ndarray:
    """Softmax probabilities (N, C, *output_shape) of the model on a batch (N, *input spatial shape).

    The network output is centre-cropped to `output_shape` (a no-op for valid
    padding; the halo for same padding). With `tta`, the 8 flips/rotations of
    the last two axes are averaged.
    """
    device = next(model.parameters()).device
    inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))[:, None].to(device)
    transforms = list(dihedral_transforms()) if tta else [(False, False, False)]
    total = None
    with torch.inference_mode(), _autocast(device, amp):
        for flips in transforms:
            transformed = _transform(inputs, *flips)
            shape = list(output_shape)
            if flips[2]:
                shape[-1], shape[-2] = shape[-2], shape[-1]
            logits = center_crop(model(transformed), torch.Size(shape))
            probabilities = _inverse(torch.softmax(logits.float(), dim=1), *flips)
            total = probabilities if total is None else total + probabilities
    return (total / len(transforms)).cpu().numpy()


def predict_in_memory(model: UNet, volume: np.ndarray, tile: int) -> np.ndarray:
    """Class probabilities (C, z, y, x) of a (z, y, x) volume held in memory, by overlap tiles.

    Used for validation during training; the same tiling and mirroring as the
    Dask predict stage.
    """
    geometry = model.config.geometry
    ndim = model.config.ndim
    requested = tuple(volume.shape[0] if axis < 3 - ndim else tile for axis in range(3))
    chunks = tuple(volume.shape[0] if axis < 3 - ndim else geometry.stride for axis in range(3))
    out = np.empty((model.config.classes, *volume.shape), dtype=np.float32)
    for piece in plan_tiles(geometry, volume.shape, tile_shape(geometry, chunks, requested, volume.shape)):
        block = read_mirrored(volume, piece.input)
        batch = block if ndim == 2 else block[np.newaxis]
        probs = forward_probabilities(model, batch, piece.network_output[-ndim:])
        probs = probs.transpose(1, 0, 2, 3) if ndim == 2 else probs[0]
        out[(slice(None), *piece.output.slices())] = probs[(slice(None), *(slice(0, n) for n in piece.output.shape))]
    return out
