"""The U-Net of Ronneberger et al. (2015): valid 3x3 convolutions, 2x2 max-pooling,
up-convolutions and cropped skip connections, in 2D or 3D.

A checkpoint stores the model's own config (`ModelConfig`), so predict can
rebuild the network from the file alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pickle
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .geometry import UNetGeometry
from .images import InputError


@dataclass(frozen=True)
class ModelConfig:
    ndim: int = 2
    depth: int = 3
    base_features: int = 16
    growth: int = 2
    classes: int = 2
    dropout: float = 0.0
    padding: str = "valid"
    norm: str = "none"

    def __post_init__(self) -> None:
        self.geometry  # noqa: B018 -- constructing it validates depth, ndim and padding

    @property
    def geometry(self) -> UNetGeometry:
        return UNetGeometry(depth=self.depth, ndim=self.ndim, padding=self.padding)

    @property
    def widths(self) -> list[int]:
        """Feature maps per level, top to bottom."""
        return [self.base_features * self.growth**level for level in range(self.depth + 1)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown model keys {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**values)


def _norm(kind: str, ndim: int, channels: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return (nn.BatchNorm2d if ndim == 2 else nn.BatchNorm3d)(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    raise ConfigError(f"model.norm must be 'none', 'batch' or 'group', got {kind!r}")


def _layers(ndim: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module]]:
    if ndim == 2:
        return nn.Conv2d, nn.MaxPool2d, nn.ConvTranspose2d
    if ndim == 3:
        return nn.Conv3d, nn.MaxPool3d, nn.ConvTranspose3d
    raise ConfigError(f"model.ndim must be 2 or 3, got {ndim}")


class _DoubleConv(nn.Sequential):
    def __init__(self, config: ModelConfig, channels_in: int, channels_out: int) -> None:
        conv = _layers(config.ndim)[0]
        padding = 1 if config.padding == "same" else 0
        super().__init__(
            conv(channels_in, channels_out, kernel_size=3, padding=padding),
            _norm(config.norm, config.ndim, channels_out),
            nn.ReLU(inplace=True),
            conv(channels_out, channels_out, kernel_size=3, padding=padding),
            _norm(config.norm, config.ndim, channels_out),
            nn.ReLU(inplace=True),
        )


def center_crop(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Crop the spatial axes of `tensor` (N, C, ...) to `shape`, centred."""
    slices = [slice(None), slice(None)]
    for have, want in zip(tensor.shape[2:], shape):
        offset = (have - want) // 2
        slices.append(slice(offset, offset + want))
    return tensor[tuple(slices)]


class UNet(nn.Module):
    """Input (N, 1, *spatial) -> logits (N, classes, *spatial - 2 * halo)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        conv, pool, upconv = _layers(config.ndim)
        widths = config.widths
        self.down = nn.ModuleList()
        channels = 1
        for width in widths[:-1]:
            self.down.append(_DoubleConv(config, channels, width))
            channels = width
        self.pool = pool(kernel_size=2)
        self.bottom = _DoubleConv(config, channels, widths[-1])
        self.dropout = nn.Dropout(config.dropout)
        self.up = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for width_below, width in zip(widths[:0:-1], widths[-2::-1]):
            self.up.append(upconv(width_below, width, kernel_size=2, stride=2))
            self.up_convs.append(_DoubleConv(config, 2 * width, width))
        self.head = conv(widths[0], config.classes, kernel_size=1)
        self.apply(_he_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(self.dropout(x))  # dropout at the end of the contracting path, as in the paper
        for up, block, skip in zip(self.up, self.up_convs, reversed(skips)):
            x = up(x)
            x = block(torch.cat([center_crop(skip, x.shape[2:]), x], dim=1))
        return self.head(x)


def activation_bytes(config: ModelConfig, input_shape: tuple[int, ...], batch: int = 1, itemsize: int = 4) -> int:
    """Estimated peak memory of one inference forward pass on `batch` inputs of `input_shape` (spatial).

    Counts the skip connections kept for the expanding path plus the two
    largest live feature maps at each level; an estimate for choosing tiles,
    not an exact figure.
    """
    voxels = math.prod(input_shape)
    scale = 2**config.ndim
    skips = sum(width * voxels / scale**level for level, width in enumerate(config.widths[:-1]))
    working = max(3 * width * voxels / scale**level for level, width in enumerate(config.widths))
    return int(batch * itemsize * (skips + working))


def _he_init(module: nn.Module) -> None:
    """Gaussian weights with std sqrt(2 / N), N = incoming connections per unit (the paper's choice)."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        nn.init.zeros_(module.bias)


def save_checkpoint(path: str | os.PathLike, model: UNet, **extra: Any) -> None:
    """Save the model's config and weights (with `weights_sha256`, see `weights_hash`) and `extra`."""
    torch.save({"model_config": dataclasses.asdict(model.config), "state_dict": model.state_dict(),
                "weights_sha256": weights_hash(model.state_dict()), **extra}, path)


def weights_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """A hash of a model's weights alone (names, dtypes, shapes and values): equal for bit-identical weights,
    whatever else the checkpoint file holds (timestamps, provenance)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> UNet:
    """Rebuild a model from a checkpoint alone, in eval mode on `device`."""
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
        model = UNet(ModelConfig.from_dict(checkpoint["model_config"]))
        model.load_state_dict(checkpoint["state_dict"])
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such checkpoint") from err
    except (OSError, EOFError) as err:  # a truncated, empty or unreadable file
        raise InputError(f"{path}: the checkpoint cannot be read, it is truncated or damaged ({err}); "
                         "retrain or restore it") from err
    except (KeyError, TypeError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
        raise InputError(f"{path}: not a checkpoint of a compatible unet-pipeline model ({err})") from err
    return model.to(device).eval()


def select_device(preferred: str = "auto") -> torch.device:
    """CUDA when asked for or available ('auto'), else CPU."""
    if preferred == "cuda" or (preferred == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but torch sees no CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")
