"""Reading a bioimage.io model package (.zip) without running it: its description and its weights' hash."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import InputError


def description(package: str | os.PathLike) -> dict[str, Any]:
    """The package's rdf.yaml, named in the error when the file is no bioimage.io package."""
    try:
        with zipfile.ZipFile(package) as archive:
            return yaml.safe_load(archive.read("rdf.yaml"))
    except (zipfile.BadZipFile, KeyError, OSError, yaml.YAMLError) as err:
        raise InputError(f"{package}: not a bioimage.io model package (a zip with rdf.yaml): {err}") from err


def summary(package: str | os.PathLike) -> dict[str, Any]:
    """What `unet-pipeline info` prints of a package: its name, tensors' axes, weight formats and the
    provenance this pipeline recorded in it (`config.unet_pipeline`, none for a foreign package)."""
    rdf = description(package)
    def tensors(kind: str) -> list[dict[str, Any]]:  # each axis by its id (batch and channel have none written)
        return [{"id": t["id"], "axes": [axis.get("id", axis["type"]) for axis in t["axes"]]} for t in rdf[kind]]

    return {"name": rdf.get("name"), "format_version": rdf.get("format_version"), "inputs": tensors("inputs"),
            "outputs": tensors("outputs"),
            "weights": sorted(rdf.get("weights", {})), **rdf.get("config", {}).get("unet_pipeline", {})}


def check(package: str | os.PathLike) -> dict[str, Any]:
    """`verify` of a package: the hash of its pytorch_state_dict weights (see `nn.checkpoint.weights_hash`)
    against the one this pipeline recorded when it exported them (none recorded: intact)."""
    import torch

    from ..nn.checkpoint import weights_hash

    rdf = description(package)
    entry = rdf.get("weights", {}).get("pytorch_state_dict")
    if entry is None:
        raise InputError(f"{package}: no pytorch_state_dict weights to hash (it has {sorted(rdf.get('weights', {}))})")
    with zipfile.ZipFile(package) as archive:
        weights = torch.load(io.BytesIO(archive.read(Path(entry["source"]).name)), map_location="cpu",
                             weights_only=True)
    actual = weights_hash(weights)
    recorded = rdf.get("config", {}).get("unet_pipeline", {}).get("weights_sha256")
    return {"path": str(package), "fingerprint": actual, "recorded": recorded, "intact": recorded in (None, actual)}
