"""Content fingerprints of images: a hash per chunk of every level, one over level 0's, and a record of the
metadata that shapes the values (axes, scales, translations; each level's shape, dtype, chunks and shards).

A chunk's hash is taken over its decoded values (dtype, shape and C-order
bytes), so it does not depend on the codec or the Zarr format, and two runs
that write the same values get the same fingerprint. Writers hash each
level-0 chunk from the block they have just written (no second read) and
keep the hashes in the block's record; when the image is complete its
pyramid levels are read back and hashed (on threads; a y-x pyramid holds a
third of level 0's voxels), and everything is gathered into
`<image>/content.json`. Level 0's fingerprint goes into the provenance.
`verify` decodes every chunk of every level again and compares, and checks
the metadata and the provenance's fingerprint against the record.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import dask
import numpy as np
import zarr

from ..core.errors import InputError
from ..core.geometry import Box, Coordinate, grid_indices
from . import crash_points

MANIFEST = "content.json"  # not a Zarr node: readers of the image ignore it
ALGORITHM = "blake2b-128 over dtype, shape and C-order values of each chunk; sha256 over level 0's 'key hash' lines"
HASH_TASK_CHUNKS = 64  # chunks hashed per thread task when a level is read back


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


def level_paths(group: zarr.Group) -> list[str]:
    """The paths of an image's levels, level 0 first (its NGFF multiscales)."""
    from .ome_zarr import ngff_attrs

    return [dataset["path"] for dataset in ngff_attrs(group)["multiscales"][0]["datasets"]]


def shaping_metadata(group: zarr.Group) -> dict[str, Any]:
    """What of an image's metadata decides what its values mean: the axes and each level's path, scale and
    translation (its NGFF multiscales), shape, dtype, chunks and shards; not its codec, name or provenance."""
    from .ome_zarr import ngff_attrs

    multiscale = ngff_attrs(group)["multiscales"][0]
    arrays = {path: {"shape": list(group[path].shape), "dtype": str(group[path].dtype),
                     "chunks": list(group[path].chunks),
                     "shards": list(group[path].shards) if group[path].shards else None}
              for path in level_paths(group)}
    return {"axes": multiscale["axes"], "datasets": multiscale["datasets"], "arrays": arrays}


def write_manifest(image: str | os.PathLike, hashes: dict[str, str], array: zarr.Array) -> str | None:
    """Write `<image>/content.json` and return level 0's fingerprint, when `hashes` cover every chunk of level 0
    `array` (a writer that does not hash leaves none: no fingerprint then). The pyramid levels are read back
    and hashed here: call it once the image is complete, its metadata too."""
    if set(hashes) != set(expected_keys(array)):
        return None
    digest = fingerprint(hashes)
    group = zarr.open_group(str(image), mode="r")
    levels = {path: recomputed_hashes(group[path])[0] for path in level_paths(group)[1:]}
    manifest = {"algorithm": ALGORITHM, "fingerprint": digest, "shape": list(array.shape),
                "chunks": list(array.chunks), "dtype": str(array.dtype), "chunk_hashes": dict(sorted(hashes.items())),
                "levels": {path: dict(sorted(level.items())) for path, level in levels.items()},
                "metadata": json.loads(json.dumps(shaping_metadata(group)))}
    (Path(image) / MANIFEST).write_text(json.dumps(manifest))
    crash_points.passed(f"manifest of {Path(image).name}")
    return digest


def manifest(image: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(image) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def _hash_chunks(array: zarr.Array, keys: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    hashes, damaged = {}, {}
    for key in keys:
        index = [int(i) for i in key.split("/")]
        try:
            hashes[key] = value_hash(np.asarray(array[Box.unit(index, array.chunks, array.shape).slices()]))
        except Exception as err:  # whatever the codec raises for a damaged chunk
            damaged[key] = repr(err)
    return hashes, damaged


def recomputed_hashes(array: zarr.Array) -> tuple[dict[str, str], dict[str, str]]:
    """Every chunk of `array` decoded and hashed again, on threads (the codecs and the hash release the GIL):
    (hashes, {key: error} of chunks that cannot be read)."""
    keys = expected_keys(array)
    tasks = [dask.delayed(_hash_chunks)(array, keys[i:i + HASH_TASK_CHUNKS])
             for i in range(0, len(keys), HASH_TASK_CHUNKS)]
    hashes, damaged = {}, {}
    for part, broken in dask.compute(*tasks, scheduler="threads"):
        hashes.update(part)
        damaged.update(broken)
    return hashes, damaged


def check_manifest(image: str | os.PathLike, array: zarr.Array) -> dict[str, Any]:
    """Compare an image on disk with its manifest: the chunks of every level that are missing, damaged (cannot
    be decoded) or changed (each named '<level path>/<grid index>'), the metadata entries that changed, and
    whether the provenance names the recorded fingerprint."""
    from .chunk_files import missing_keys
    from .ome_zarr import image_attrs

    recorded = manifest(image)
    if recorded is None or "levels" not in recorded:
        raise InputError(f"{image}: no {MANIFEST} with the hashes of every level; it was written by a stage that "
                         "records no chunk hashes, or by an older version")
    group = zarr.open_group(str(image), mode="r")
    level0 = level_paths(group)[0]
    expected = {level0: recorded["chunk_hashes"], **recorded["levels"]}
    report: dict[str, Any] = {"fingerprint": recorded["fingerprint"], "levels_fingerprint": fingerprint(
        {f"{path}/{key}": value for path, level in expected.items() for key, value in level.items()}),
        "metadata_sha256": hashlib.sha256(json.dumps(recorded["metadata"], sort_keys=True).encode()).hexdigest(),
        "chunks": sum(map(len, expected.values())), "missing": [], "damaged": [], "changed": []}
    for path, hashes_of_level in expected.items():
        if path not in group:
            report["missing"].append(path)
            continue
        level = array if path == level0 else group[path]
        report["missing"] += [f"{path}/{key}" for key in missing_keys(level)]
        hashes, damaged = recomputed_hashes(level)
        report["damaged"] += [f"{path}/{key}" for key in sorted(damaged)]
        report["changed"] += [f"{path}/{key}" for key, value in sorted(hashes.items())
                              if hashes_of_level.get(key, value) != value]
    report["metadata_changed"] = _changed_entries(recorded["metadata"], json.loads(json.dumps(shaping_metadata(group))))
    named = image_attrs(image).get("provenance", {}).get("content_sha256")
    report["provenance_matches"] = named == recorded["fingerprint"] == fingerprint(recorded["chunk_hashes"])
    report["intact"] = report["provenance_matches"] and not any(
        report[key] for key in ("missing", "damaged", "changed", "metadata_changed"))
    return report


def _changed_entries(recorded: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted names of the entries that differ between two metadata records ('datasets', 'arrays.1.chunks')."""
    changed = []
    for key in sorted(set(recorded) | set(current)):
        before, after = recorded.get(key), current.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            changed += _changed_entries(before, after, f"{prefix}{key}.")
        elif before != after:
            changed.append(f"{prefix}{key}")
    return changed
