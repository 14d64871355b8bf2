"""What shapes a segmentation: the checked settings of the segment stage's methods, in memory or blockwise."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal, Sequence

from ..core.errors import ConfigError
from . import agglomerate
from .labeling import FACE_CONNECTIVITY, check_connectivity

Method = Literal["components", "watershed", "agglomerate"]  # the segment stage's METHODS, one entry each


@dataclass(frozen=True)
class Settings:
    """What shapes a segmentation (see config/README.md, `segment`)."""

    method: Method
    mode: Literal["2d", "3d"]
    connectivity: int
    threshold: float
    seed_threshold: float
    seed_distance: int
    agglomeration: str
    merge_threshold: float | Literal["auto"]
    merge_thresholds: tuple[float, ...]
    tune_sections: tuple[int, int] | None  # [first, last) sections 'auto' scores on; None: all
    min_size: int

    def check(self) -> None:
        if self.method not in typing.get_args(Method):
            raise ConfigError(f"segment.method must be one of {sorted(typing.get_args(Method))}, got {self.method!r}")
        check_connectivity(self.mode, self.connectivity)
        agglomerate.solver(self.agglomeration)
        if self.tuned and not self.merge_thresholds:
            raise ConfigError("segment.merge_threshold 'auto' needs segment.merge_thresholds to choose from")

    @classmethod
    def of(cls, *, method: Method, mode: Literal["2d", "3d"], connectivity: int | None, threshold: float,
           seed_threshold: float, seed_distance: int, agglomeration: str, merge_threshold: float | Literal["auto"],
           merge_thresholds: Sequence[float], tune_sections: Sequence[int] | None, min_size: int) -> "Settings":
        """Checked settings from the config's values (connectivity None: face neighbours)."""
        settings = cls(method, mode, connectivity or FACE_CONNECTIVITY.get(mode, 0), threshold, seed_threshold,
                       seed_distance, agglomeration, merge_threshold, tuple(merge_thresholds),
                       tuple(tune_sections) if tune_sections else None, min_size)
        settings.check()
        return settings

    @property
    def tuned(self) -> bool:
        """Whether the merge threshold is chosen on labelled sections."""
        return self.method == "agglomerate" and self.merge_threshold == "auto"
