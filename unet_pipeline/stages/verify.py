"""`unet-pipeline verify PATH [OTHER]`: is an output intact, and are two outputs identical?

An image is intact when every chunk of every level decodes to the values its
writer hashed, the metadata that shapes them (axes, scales, translations,
shapes, dtypes, chunks) is as recorded, and its provenance names the
recorded fingerprint; a checkpoint when its weights hash to the recorded
hash. Exit 0: intact (and identical); 1: intact but different; 2: damaged,
or unreadable (named).
"""

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
    if Path(path).suffix == ".zip":  # a bioimage.io package: its weights
        from ..zoo.package import check as check_package

        return check_package(path)
    linked = ome_zarr.linked_level0(path)
    if linked is not None:
        raise InputError(f"{path}: reads {linked} in place; a source this pipeline did not write has no recorded "
                         "chunk hashes (each later stage's provenance holds its fingerprint over file names, sizes and "
                         "times)")
    return {"path": str(path), **chunk_hashes.check_manifest(path, ome_zarr.open_image(path))}


def _check_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    from ..nn.checkpoint import load_model, read_checkpoint, weights_hash

    recorded = read_checkpoint(path).get("weights_sha256")
    actual = weights_hash(load_model(path).state_dict())
    return {"path": str(path), "fingerprint": actual, "recorded": recorded, "intact": recorded in (None, actual)}


def verify(path: str | os.PathLike, other: str | os.PathLike | None = None) -> int:
    """Print the check of `path` (and of `other`, and whether the two are identical) as JSON; the exit status."""
    reports = [check(p) for p in (path, other) if p is not None]
    summary: dict[str, Any] = {"outputs": reports}
    if other is not None:  # images: the same values at every level, with the same metadata shaping them
        summary["identical"] = all(reports[0].get(key) == reports[1].get(key)
                                   for key in ("fingerprint", "levels_fingerprint", "metadata_sha256"))
    print(json.dumps(summary, indent=2))
    if not all(report["intact"] for report in reports):
        return DAMAGED
    return DIFFERENT if other is not None and not summary["identical"] else INTACT
