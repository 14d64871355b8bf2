"""Content fingerprints of images: a hash per chunk of level 0, and one over them all.

A chunk's hash is taken over its decoded values (dtype, shape and C-order
bytes), so it does not depend on the codec or the Zarr format, and two runs
that write the same values get the same fingerprint. Writers hash each chunk
from the block they have just written (no second read) and keep the hashes
in the block's record; when the image is complete they are gathered into
`<image>/content.json` and the fingerprint goes into the provenance.
`verify` decodes every chunk again and compares.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zarr

from ..core.errors import InputError
from ..core.geometry import Box, Coordinate, grid_indices
from . import crash_points

MANIFEST = "content.json"  # not a Zarr node: readers of the image ignore it
ALGORITHM = "blake2b-128 over dtype, shape and C-order values of each level-0 chunk; sha256 over 'key hash' lines"


def chunk_key(index: Sequence[int]) -> str:
    """The name of a chunk by its grid index, the same whatever the Zarr format: '0/3/1'."""
    return "/".join(map(str, index))


def value_hash(values: np.ndarray) -> str:
    values = np.ascontiguousarray(values)
    digest = hashlib.blake2b(f"{values.dtype.str}{values.shape}".encode(), digest_size=16)
    digest.update(memoryview(values).cast("B"))
    return digest.hexdigest()


def chunk_hashes(block: np.ndarray, start: Sequence[int], chunks: Sequence[int]) -> dict[str, str]:
    """The hash of each chunk inside `block`, a region of whole chunks (clipped at the volume's end) whose
    first voxel is `start`."""
    first = Coordinate(start) // chunks
    return {chunk_key(first + offset): value_hash(block[Box.unit(offset, chunks, block.shape).slices()])
            for offset in grid_indices(block.shape, chunks)}


def fingerprint(hashes: dict[str, str]) -> str:
    """One hash over every chunk's hash, in key order."""
    lines = "".join(f"{key} {hashes[key]}\n" for key in sorted(hashes))
    return hashlib.sha256(lines.encode()).hexdigest()


def expected_keys(array: zarr.Array) -> list[str]:
    return list(map(chunk_key, grid_indices(array.shape, array.chunks)))


def write_manifest(image: str | os.PathLike, hashes: dict[str, str], array: zarr.Array) -> str | None:
    """Write `<image>/content.json` and return the fingerprint, when `hashes` cover every chunk of level 0
    `array` (a writer that does not hash leaves none: no fingerprint then)."""
    if set(hashes) != set(expected_keys(array)):
        return None
    digest = fingerprint(hashes)
    manifest = {"algorithm": ALGORITHM, "fingerprint": digest, "shape": list(array.shape),
                "chunks": list(array.chunks), "dtype": str(array.dtype), "chunk_hashes": dict(sorted(hashes.items()))}
    (Path(image) / MANIFEST).write_text(json.dumps(manifest))
    crash_points.passed(f"manifest of {Path(image).name}")
    return digest


def manifest(image: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(image) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def recomputed_hashes(array: zarr.Array) -> tuple[dict[str, str], dict[str, str]]:
    """Every chunk of `array` decoded and hashed again: (hashes, {key: error} of chunks that cannot be read)."""
    hashes, damaged = {}, {}
    for key in expected_keys(array):
        index = [int(i) for i in key.split("/")]
        try:
            hashes[key] = value_hash(np.asarray(array[Box.unit(index, array.chunks, array.shape).slices()]))
        except Exception as err:  # whatever the codec raises for a damaged chunk
            damaged[key] = repr(err)
    return hashes, damaged


def check_manifest(image: str | os.PathLike, array: zarr.Array) -> dict[str, Any]:
    """Compare the chunks of an image on disk with its manifest: what is missing, damaged or changed."""
    from .chunk_files import missing_keys

    recorded = manifest(image)
    if recorded is None:
        raise InputError(f"{image}: no {MANIFEST}; it was written by a stage that records no chunk hashes, "
                         "or by an older version")
    missing = set(missing_keys(array))
    hashes, damaged = recomputed_hashes(array)
    changed = sorted(key for key, value in hashes.items()
                     if key in recorded["chunk_hashes"] and recorded["chunk_hashes"][key] != value)
    return {"fingerprint": recorded["fingerprint"], "chunks": len(recorded["chunk_hashes"]),
            "missing": sorted(missing), "damaged": sorted(damaged), "changed": changed,
            "intact": not missing and not damaged and not changed and fingerprint(hashes) == recorded["fingerprint"]}
