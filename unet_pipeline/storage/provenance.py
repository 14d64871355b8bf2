"""Provenance records stored with every output: what made it, from what, when."""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from .. import __version__
from . import chunk_hashes, ome_zarr


@functools.cache
def git_commit() -> str | None:
    """The commit of the package's source tree, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@functools.cache
def git_dirty() -> bool | None:
    """Whether the package's git checkout has uncommitted changes to tracked files (None: not a checkout)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_fingerprint(path: str | os.PathLike) -> str:
    """The fingerprint of an input: for an image this pipeline wrote, its content fingerprint (see `chunk_hashes`)
    and its metadata without the provenance, so byte-identical runs agree; for anything else a checksum
    over the name, size and modification time of a file or of every file in a folder, and over the
    contents of Zarr metadata files (cheap even for terabytes), through the link into the user's array of a
    linked image (see `ome_zarr.link_image`), so a source changed under a finished run is noticed."""
    root = Path(path)
    if (root / chunk_hashes.MANIFEST).is_file():
        attrs = ome_zarr.image_attrs(root)
        recorded = attrs.pop("provenance", {}).get("content_sha256")  # the manifest's fingerprint, copied there
        text = json.dumps({"content": recorded or chunk_hashes.manifest(root)["fingerprint"], "attrs": attrs},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(Path(folder, name) for folder, _, names in
                                                 os.walk(root, followlinks=True) for name in names)
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(root) if file != root else file.name}\0{stat.st_size}\0"
                      f"{stat.st_mtime_ns}\n".encode())
        if file.name.startswith(".z") or file.name == "zarr.json":
            digest.update(file.read_bytes())
    return digest.hexdigest()


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def fingerprint_inputs(inputs: dict[str, str]) -> dict[str, str]:
    """The fingerprint (see `input_fingerprint`) of each input that exists, by name."""
    return {name: input_fingerprint(path) for name, path in inputs.items() if path and Path(path).exists()}


def record(stage: str, settings: dict[str, Any], inputs: dict[str, str], started: str,
           fingerprints: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """A provenance record; call when the stage's work is done (it stamps the end time).

    `fingerprints`: those of `inputs` when the stage has them already (see `fingerprint_inputs`, computed
    here otherwise).
    """
    return {
        "stage": stage,
        "settings": settings,
        "inputs": inputs,
        "input_fingerprints": fingerprint_inputs(inputs) if fingerprints is None else fingerprints,
        "package_version": __version__,
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "started": started,
        "finished": now(),
        **extra,
    }


def recorded_tuning(image: str | os.PathLike) -> dict[str, Any]:
    """How segment chose the merge threshold of the segmentation `image` (its provenance's `blocks.tuning`:
    the value, the sections, and the curve where it was tuned there); {} when it was set, not tuned."""
    return ome_zarr.image_attrs(image).get("provenance", {}).get("blocks", {}).get("tuning") or {}
