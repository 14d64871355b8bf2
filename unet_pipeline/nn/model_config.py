"""What a U-Net is, without torch: its config (depth, widths, padding, ...), its geometry and an estimate of its
activation memory. The workflow sizes jobs from these, so this module imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..core.errors import ConfigError
from ..core.geometry import UNetGeometry


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
