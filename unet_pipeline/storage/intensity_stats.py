"""Preprocess's output: a volume's intensity statistics as a small JSON file (the percentiles that map its raw
to [0, 1]), which predict and train apply to every tile they read instead of reading a normalised copy.

    {"low": 12.0, "high": 231.0, "low_percentile": 0.5, "high_percentile": 99.5, "provenance": {...}}
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..core.errors import InputError
from . import outputs


def write_statistics(path: str | os.PathLike, statistics: dict[str, Any]) -> None:
    """Write `statistics` (low, high and what they came from) at `path`, atomically."""
    with outputs.atomic_output(path) as partial:
        partial.write_text(json.dumps(statistics, indent=2, sort_keys=True) + "\n")


def read_statistics(path: str | os.PathLike) -> dict[str, Any]:
    """The statistics at `path`, refused (naming the file and what is wrong) unless they hold a low below or at
    a high."""
    try:
        statistics = json.loads(open(path).read())
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such intensity statistics file (preprocess writes it)") from err
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read it as intensity statistics (JSON): {err}") from err
    low, high = (statistics.get("low"), statistics.get("high")) if isinstance(statistics, dict) else (None, None)
    if not all(isinstance(value, (int, float)) for value in (low, high)) or low > high:
        raise InputError(f"{path}: intensity statistics need numbers 'low' <= 'high', got {statistics!r:.200}")
    return statistics


def intensity_range(path: str | os.PathLike | None) -> tuple[float, float] | None:
    """The (low, high) of the statistics at `path`; None for None (an image that is already normalised)."""
    if path is None:
        return None
    statistics = read_statistics(path)
    return float(statistics["low"]), float(statistics["high"])
