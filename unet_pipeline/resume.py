"""Durable per-tile completion records, so a killed predict run resumes where it stopped.

A run writes into `<output>.partial`. Its key (a checksum of the model, a
fingerprint of the input and the settings that shape the output) is stored
there; a rerun with the same key keeps the finished tiles, any other key
starts afresh, so a stale record is never trusted. A tile is recorded only
after all its chunks are written.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from . import io
from .geometry import Tile

KEY_FILE = "run_key"
RECORDS = "tiles.done"  # not a Zarr node: readers of the image ignore it


def input_fingerprint(image: str | os.PathLike) -> str:
    """Checksum over an image's metadata and the name, size and modification time of every file in it."""
    root = Path(image)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        if path.name.startswith(".z"):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def run_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def tile_name(tile: Tile) -> str:
    return "_".join(map(str, tile.output.start))


def open_partial(partial: Path, key: str) -> bool:
    """Prepare `partial` for a run with `key`; True when it holds a resumable earlier run."""
    key_file = partial / KEY_FILE
    if key_file.is_file() and key_file.read_text() == key:
        return True
    io.remove(partial)
    return False


def seal(partial: Path, key: str) -> None:
    """Mark a freshly created `partial` as belonging to the run `key`, with no tile finished yet."""
    (partial / RECORDS).mkdir()
    (partial / KEY_FILE).write_text(key)


def finished_tiles(partial: Path) -> set[str]:
    return {entry.name for entry in os.scandir(partial / RECORDS) if not entry.name.endswith(".tmp")}


def record_tile(partial: str | os.PathLike, tile: Tile) -> None:
    """Record a finished tile (an empty file, created atomically)."""
    path = Path(partial) / RECORDS / tile_name(tile)
    scratch = path.with_name(path.name + ".tmp")
    scratch.touch()
    os.replace(scratch, path)


def clear(partial: Path) -> None:
    """Drop the records once the whole output is complete."""
    io.remove(partial / RECORDS)
    io.remove(partial / KEY_FILE)
