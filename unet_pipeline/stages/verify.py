"""`unet-pipeline verify PATH [OTHER]`: is an output intact, and are two outputs identical?"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from ..storage import chunk_hashes, ome_zarr

INTACT, DIFFERENT, DAMAGED = 0, 1, 2  # exit statuses


def check(path: str | os.PathLike) -> dict[str, Any]:
    """What `path` (an image or a checkpoint) holds against what its writer recorded."""
    if Path(path).suffix == ".pt":
        return _check_checkpoint(path)
    linked = ome_zarr.linked_level0(path)
    if linked is not None:
        raise InputError(f"{path}: reads {linked} in place; a source this pipeline did not write has no recorded "
                         "chunk hashes (each later stage's provenance holds its fingerprint over file names, sizes and "
                         "times)")
    return {"path": str(path), **chunk_hashes.check_manifest(path, ome_zarr.open_image(path))}


def _check_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    import torch

    from ..nn.checkpoint import load_model, weights_hash

    recorded = torch.load(path, map_location="cpu", weights_only=True).get("weights_sha256")
    actual = weights_hash(load_model(path).state_dict())
    return {"path": str(path), "fingerprint": actual, "recorded": recorded, "intact": recorded in (None, actual)}


def verify(path: str | os.PathLike, other: str | os.PathLike | None = None) -> int:
    """Print the check of `path` (and of `other`, and whether the two are identical) as JSON; the exit status."""
    reports = [check(p) for p in (path, other) if p is not None]
    summary: dict[str, Any] = {"outputs": reports}
    if other is not None:
        summary["identical"] = reports[0]["fingerprint"] == reports[1]["fingerprint"]
    print(json.dumps(summary, indent=2))
    if not all(report["intact"] for report in reports):
        return DAMAGED
    return DIFFERENT if other is not None and not summary["identical"] else INTACT
