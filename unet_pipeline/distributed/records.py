"""Resumable outputs: durable per-block completion records, so a killed stage resumes where it stopped.

A stage writes into `<output>.partial`. Its run key (a checksum over the
fingerprints of its inputs and the settings that shape the output) is stored
there; a rerun with the same key keeps the finished blocks, any other key
starts afresh, so a stale record is never trusted. A block is recorded only
after all its chunks are written. The key is kept in the finished output's
provenance, so a rerun of the same work on a complete output does nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import dask
import dask.array as da
import numpy as np
import zarr

from ..core import progress
from ..storage import chunk_files, chunk_hashes, crash_points, ome_zarr, outputs, pyramid, pyramid_writer
from . import tasks
from .blocks import block_name

KEY_FILE = "run_key"
GRAPH_CHUNKS = 4096  # source chunks per Dask graph at most ...
GRAPH_BYTES = 256 << 20  # ... and source bytes: the graph and what it holds stay bounded whatever the volume
UNITS_PER_CPU = 2  # ... yet this many units (slabs) per CPU in each graph, so that every thread has work
RECORDS = "blocks.done"  # a folder of append-only logs, not a Zarr node: readers of the image ignore it


def run_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Resumable:
    """An output being written: its partial image, the blocks an earlier run of the same key finished, and
    how many pyramid levels the writer fills along with level 0."""

    partial: Path
    array: zarr.Array
    finished: set[str]
    levels_written: int = 0

    def record(self, name: str, hashes: dict[str, str] | None = None) -> None:
        record_block(self.partial, name, hashes)


@contextlib.contextmanager
def resumable_image(output: str | os.PathLike, key: str,
                    create: Callable[[Path], zarr.Array]) -> Iterator[Resumable | None]:
    """Hold `output`'s lock and yield the partial image to fill, or None when `output` is already
    complete for `key`.

    The partial image is reopened with its finished blocks when an earlier run
    of `key` left it, else made afresh by `create(partial)`. On success the
    pyramid is built, the key is added to the provenance the stage wrote, the
    records are dropped and the image moves into place.
    """
    with outputs.output_lock(output):
        if complete_for(output, key):
            yield None
            return
        partial = outputs.partial_path(output)
        if not open_partial(partial, key):
            create(partial)
            seal(partial, key)
        target = Resumable(partial, ome_zarr.open_image(partial, mode="r+"), finished_blocks(partial))
        yield target
        pyramid_writer.write_pyramid(partial, target.levels_written)  # before the records go: a crash here resumes
        digest = chunk_hashes.write_manifest(partial, recorded_hashes(partial), ome_zarr.open_image(partial))
        ome_zarr.set_attrs(partial, provenance={**ome_zarr.image_attrs(partial).get("provenance", {}), "run_key": key,
                                          "content_sha256": digest})
        clear(partial)
        outputs.commit(partial, output)


def complete_for(output: str | os.PathLike, key: str) -> bool:
    """Whether `output` is a finished image made by a run of `key`."""
    if not (Path(output) / ome_zarr.LEVEL0).exists():
        return False
    return ome_zarr.image_attrs(output).get("provenance", {}).get("run_key") == key


def kept_complete(output: str | os.PathLike, stage: str) -> dict[str, int]:
    """Say that `output` is already complete for this run and count its slabs, all kept (`store_slabs`'s counts)."""
    print(f"{stage}: {output} is already complete for these inputs and settings", flush=True)
    array = ome_zarr.open_image(output)
    slabs = len(range(0, array.shape[0], chunk_files.stored_unit(array)[0]))
    return {"blocks": slabs, "computed": 0, "resumed": slabs}


def wave_sections(source: da.Array, unit: int) -> int:
    """How many sections (a multiple of `unit`) one Dask graph over `source` should cover: at most
    `GRAPH_CHUNKS` of its chunks and `GRAPH_BYTES` of its values, yet `UNITS_PER_CPU` units per CPU so every
    thread has work, and one unit at least."""
    chunks_per_section = math.prod(len(c) for c in source.chunks[1:]) / source.chunks[0][0]
    bytes_per_section = math.prod(source.shape[1:]) * source.dtype.itemsize
    sections = min(GRAPH_CHUNKS / chunks_per_section, GRAPH_BYTES / bytes_per_section)
    return max(int(sections) // unit, UNITS_PER_CPU * (os.cpu_count() or 1), 1) * unit


def store_slabs(source: da.Array, target: Resumable, label: str) -> dict[str, int]:
    """Compute and write every slab of `source` (whole output chunks along z) not yet recorded in
    `target`, in parallel on Dask's threads, recording each slab once written. Slabs go in waves (see
    `wave_sections`), each computed from its own slice of `source`'s graph.

    Each slab also fills the pyramid levels it determines on its own (see
    `pyramid_writer.slab_levels`), so the pyramid need not read level 0 back.
    """
    array, slab = target.array, chunk_files.stored_unit(target.array)[0]
    levels = pyramid_writer.slab_levels(target.partial)
    starts = range(0, source.shape[0], slab)
    todo = [z for z in starts if block_name((z,)) not in target.finished]
    meter = progress.Meter(label, len(todo))
    counting = threading.Lock()

    def write(block: np.ndarray, z: int) -> None:
        array[z : z + len(block)] = block
        hashes = chunk_hashes.chunk_hashes(block.astype(array.dtype, copy=False), (z, 0, 0), array.chunks)
        for level, step, method in levels:  # y and x only: the slab keeps its z range
            block = pyramid.downsample(block, step, method)
            level[z : z + len(block)] = block
        target.record(block_name((z,)), hashes)
        with counting:
            meter.advance()

    for wave in tasks.batched(todo, wave_sections(source, slab) // slab):  # memory does not grow with the volume
        first = wave[0]
        blocks = source[first : wave[-1] + slab].rechunk((slab, *source.shape[1:])).to_delayed().ravel()
        dask.compute(*(dask.delayed(write)(blocks[(z - first) // slab], z) for z in wave))
    target.levels_written = len(levels)
    return {"blocks": len(starts), "computed": len(todo), "resumed": len(starts) - len(todo)}


def open_partial(partial: Path, key: str) -> bool:
    """Prepare `partial` for a run with `key`; True when it holds a resumable earlier run."""
    key_file = partial / KEY_FILE
    if key_file.is_file() and key_file.read_text() == key:
        return True
    outputs.remove(partial)
    return False


def seal(partial: Path, key: str) -> None:
    """Mark a freshly created `partial` as belonging to the run `key`, with no block finished yet."""
    (partial / RECORDS).mkdir()
    (partial / KEY_FILE).write_text(key)
    crash_points.passed(f"seal {partial.name}")


def finished_blocks(partial: Path) -> set[str]:
    return {name for name, _ in _records(partial)}


def record_block(partial: str | os.PathLike, name: str, hashes: dict[str, str] | None = None) -> None:
    """Record a finished block, with the hashes of the level-0 chunks it wrote (see `chunk_hashes`) when given.

    A record is one line appended in one write to this process's own log in
    `RECORDS` (no file to create per block, no lock: each process appends to
    its own); a writer killed mid-write leaves at most a torn line, which
    readers skip (its block is computed again).
    """
    line = json.dumps({"block": name, "hashes": hashes or {}}) + "\n"
    log = Path(partial) / RECORDS / f"{socket.gethostname()}-{os.getpid()}.log"
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)
    crash_points.passed(f"record {name}")


def save_state(partial: str | os.PathLike, name: str, state: dict[str, Any]) -> None:
    """Keep `state` (JSON) with the records of `partial`, written atomically: what a later phase needs from
    earlier ones once their scratch data may be gone. It is dropped with the records, never before them."""
    path = Path(partial) / RECORDS / f"{name}.json"
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(state))
    os.replace(scratch, path)
    crash_points.passed(f"state {name}")


def load_state(partial: str | os.PathLike, name: str) -> dict[str, Any] | None:
    """The state `name` kept by `save_state`, or None when none was."""
    path = Path(partial) / RECORDS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def recorded_hashes(partial: Path) -> dict[str, str]:
    """The chunk hashes in every block record of `partial`."""
    hashes: dict[str, str] = {}
    for _, recorded in _records(partial):
        hashes.update(recorded)
    return hashes


def _records(partial: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(block name, chunk hashes) of every whole record in `partial`'s logs."""
    for entry in os.scandir(partial / RECORDS):
        if not entry.name.endswith(".log"):  # a state (see `save_state`)
            continue
        with open(entry.path, encoding="utf-8", errors="replace") as log:
            for line in log:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # torn by a killed writer
                    continue
                yield record["block"], record["hashes"]


def clear(partial: Path) -> None:
    """Drop the records once the whole output is complete: the key first, so that a kill in between leaves a
    partial output that no rerun resumes (it starts afresh), never a key whose records are gone."""
    outputs.remove(partial / KEY_FILE)
    outputs.remove(partial / RECORDS)
    crash_points.passed(f"clear {partial.name}")
