"""The U-Net of Ronneberger et al. (2015): 3x3 convolutions (valid, as in the paper, or same-padded), 2x2
max-pooling, up-convolutions and cropped skip connections, in 2D or 3D.

Its sizes are those of `ModelConfig` (see `model_config`); `checkpoint` saves and rebuilds it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..core.errors import ConfigError
from .model_config import ModelConfig


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
    """Input (N, 1, *spatial) -> logits (N, classes, *output): `output` is `spatial` less twice the valid halo
    with valid padding, `spatial` itself with same padding (see `UNetGeometry`)."""

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


class ProbabilityUNet(UNet):
    """The U-Net with a softmax over its classes, built from its config's fields: class probabilities out. It
    holds the same weights as a `UNet` of that config (what a bioimage.io package of it runs)."""

    def __init__(self, **config: Any) -> None:
        super().__init__(ModelConfig(**config))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(super().forward(x), dim=1)


def _he_init(module: nn.Module) -> None:
    """Gaussian weights with std sqrt(2 / N), N = incoming connections per unit (the paper's choice)."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        nn.init.zeros_(module.bias)


