"""Blockwise segmentation of cell probabilities on the Dask cluster: no process holds a section whole.

The volume is cut into blocks of whole output chunks (`blocks`). Every method
runs the same phases, each a set of Dask tasks, one per block, recorded per
block when done, so a killed run resumes with only the missing blocks:

1. fragments: each block labels its own region with block-local ids
   (components of p > threshold; for `watershed`, of p > seed_threshold, the
   seeds; for `agglomerate`, watershed fragments computed on the block and
   its context). Ids are global without coordination: block index in the
   high bits (`blocks.global_ids`).
2. edges: each block lists the contacts it owns between fragments, with
   exactly mergeable boundary statistics (`region_graph`).
3. one global step on the graph alone (small next to the volume): union of
   every contact (`components`, and the seeds of `watershed`) or an
   agglomeration (`agglomerate`: mean threshold, multicut or GASP), then
   consecutive ids 1..N with segments under `min_size` voxels dropped.
   `watershed` then floods each block (with context) from the global seeds
   and numbers the floods the same way.
4. relabel: each block writes its final ids (uint32, or uint64 when N does
   not fit), 0 = boundary / no cell.

Components and the watershed's seeds equal a whole-volume labelling exactly;
the floods and the fragments do where the context covers their reach.
"""

from __future__ import annotations

import functools
import itertools
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import fastremap
import numpy as np
import zarr

from . import agglomerate, cluster, io, provenance, resume, tasks
from .blocks import Block, aligned_block_shape, block_grid, block_indices, global_ids, split_global_ids
from .fragments import seeded_flood, watershed_fragments
from .geometry import Box, Shape
from .labeling import FACE_CONNECTIVITY, check_connectivity, forward_offsets, label_components, touching_pairs
from .region_graph import block_edges, merge_tables, quantize
from .stitching import face_axes, face_views, outside_layer, stitch_pairs

CELL_CHANNEL = 1
Method = Literal["components", "watershed", "agglomerate"]
METHODS = ("components", "watershed", "agglomerate")
WORK = "work"  # scratch inside the partial output: block labels and per-block tables
FRAGMENTS, FLOODS = "fragments", "floods"


def as_probability(values: np.ndarray) -> np.ndarray:
    """Stored probabilities as float32 in [0, 1] (uint8 storage is scaled by 255)."""
    values = np.asarray(values)
    return values.astype(np.float32) / 255 if values.dtype == np.uint8 else values.astype(np.float32)


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
    merge_threshold: float
    min_size: int

    def check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"segment.method must be one of {METHODS}, got {self.method!r}")
        check_connectivity(self.mode, self.connectivity)
        if self.agglomeration not in agglomerate.SOLVERS:
            raise ValueError(f"segment.agglomeration must be one of {sorted(agglomerate.SOLVERS)}, "
                             f"got {self.agglomeration!r}")


@dataclass(frozen=True)
class Job:
    """What every task of one segment run shares."""

    probabilities: str
    work: str  # the partial output
    volume: Shape
    block: Shape
    context: Shape
    voxel_size: tuple[float, ...]
    settings: Settings
    run_key: str

    @property
    def grid(self) -> list[Block]:
        return block_grid(self.volume, self.block)


@functools.lru_cache(maxsize=16)
def _worker_array(path: str, run_key: str) -> zarr.Array:
    """An opened array, reused by the tasks of one run (keyed by it, as predict's)."""
    return zarr.open_array(path, mode="r+")


def _scratch(job: Job, name: str) -> zarr.Array:
    return _worker_array(str(Path(job.work) / WORK / name), job.run_key)


def _cell(job: Job, box: Box) -> np.ndarray:
    probabilities = _worker_array(str(Path(job.probabilities) / io.LEVEL0), job.run_key)
    return as_probability(probabilities[(CELL_CHANNEL, *box.slices())])


def _table_path(job: Job, phase: str, block: Block) -> Path:
    return Path(job.work) / WORK / phase / f"{block.name}.npz"


def _save_table(job: Job, phase: str, block: Block, **arrays: np.ndarray) -> None:
    """A block's table, written atomically, then the block's record."""
    path = _table_path(job, phase, block)
    scratch = path.with_name(path.stem + ".tmp.npz")
    np.savez(scratch, **arrays)
    os.replace(scratch, path)
    resume.record_block(job.work, f"{phase}-{block.name}")


def _load_table(job: Job, phase: str, block: Block) -> dict[str, np.ndarray]:
    with np.load(_table_path(job, phase, block)) as table:
        return dict(table)


def fragment_block(block: Block, job: Job) -> None:
    """Phase 1 (worker): label the block's own region with block-local ids; keep each id's size."""
    s = job.settings
    views: dict[str, np.ndarray] = {}
    if s.method == "agglomerate":
        read = block.read_box(job.context, job.volume)
        fragments = watershed_fragments(_cell(job, read), s.threshold, s.seed_distance, s.mode, job.voxel_size)
        own = block.box.relative_to(read)
        local, remap = fastremap.renumber(np.ascontiguousarray(fragments[own]), preserve_zero=True)
        local = local.astype(np.uint32)
        own_ids = np.zeros(int(fragments.max()) + 1, np.uint32)
        own_ids[list(remap)] = list(remap.values())
        views = face_views(fragments, own, own_ids, s.mode)
    else:
        level = s.seed_threshold if s.method == "watershed" else s.threshold
        local, _ = label_components(_cell(job, block.box) > level, s.mode, s.connectivity)
    _scratch(job, FRAGMENTS)[block.box.slices()] = local
    _save_table(job, FRAGMENTS, block, sizes=np.bincount(local.ravel())[1:], **views)


def edge_block(block: Block, job: Job) -> None:
    """Phase 2 (worker): the contacts the block owns between fragments (global ids), with boundary
    statistics for agglomeration."""
    s = job.settings
    read = block.read_box((1, 1, 1), job.volume)
    ids = global_ids(_scratch(job, FRAGMENTS)[read.slices()], block_indices(read, job.block, job.volume))
    own = block.box.relative_to(read)
    stitches = np.zeros((0, 2), np.uint64)
    if s.method == "agglomerate":
        boundary = quantize(1.0 - _cell(job, read).astype(np.float64))
        uv, stats = block_edges(ids, boundary, own, forward_offsets(s.mode, FACE_CONNECTIVITY[s.mode]))
        stitches = _stitches(block, job, ids, own)
    else:
        uv = touching_pairs(ids, own, forward_offsets(s.mode, s.connectivity))
        stats = np.zeros((len(uv), 4), np.int64)
    _save_table(job, "edges", block, uv=uv, stats=stats, stitches=stitches)


def _stitches(block: Block, job: Job, ids: np.ndarray, own: tuple[slice, ...]) -> np.ndarray:
    """Pairs of fragment pieces (global ids) that the block and its forward neighbours agree are one fragment
    (see `stitching`)."""
    views = _load_table(job, FRAGMENTS, block)
    pairs = [np.zeros((0, 2), np.uint64)]
    for axis in face_axes(job.settings.mode):
        after = outside_layer(own, axis, 1, ids.shape)
        if after is None or f"face_{axis}_1" not in views:
            continue
        before = (*own[:axis], slice(own[axis].stop - 1, own[axis].stop), *own[axis + 1:])
        neighbour_start = tuple(a + (b if i == axis else 0) for i, (a, b) in enumerate(zip(block.box.start,
                                                                                             job.block)))
        neighbour = next(b for b in job.grid if b.box.start == neighbour_start)
        theirs = _load_table(job, FRAGMENTS, neighbour)
        if f"face_{axis}_0" not in theirs:
            continue
        pairs.append(stitch_pairs(ids[before], ids[after], global_ids(views[f"face_{axis}_1"], block.index),
                                  global_ids(theirs[f"face_{axis}_0"], neighbour.index)))
    return np.concatenate(pairs)


def flood_block(block: Block, job: Job, seed_ids: dict[int, np.ndarray]) -> None:
    """Watershed phase (worker): flood the block and its context from the global seeds; keep, per flooded
    region of the block's own part, its seed and size."""
    read = block.read_box(job.context, job.volume)
    local = _scratch(job, FRAGMENTS)[read.slices()]
    owner = block_indices(read, job.block, job.volume)
    seeds = np.zeros(local.shape, np.int64)
    for index, lookup in seed_ids.items():
        here = owner == index
        seeds[here] = lookup[local[here]]
    flooded = seeded_flood(_cell(job, read), seeds, job.settings.threshold, job.settings.mode)
    own = flooded[block.box.relative_to(read)]
    seed, local_ids, sizes = np.unique(own, return_inverse=True, return_counts=True)
    has_zero = bool(len(seed)) and seed[0] == 0
    local_ids = local_ids.reshape(own.shape) + (0 if has_zero else 1)
    _scratch(job, FLOODS)[block.box.slices()] = local_ids.astype(np.uint32)
    start = 1 if has_zero else 0
    _save_table(job, FLOODS, block, seeds=seed[start:], sizes=sizes[start:])


def relabel_block(block: Block, job: Job, lookup: np.ndarray, source: str) -> None:
    """Phase 4 (worker): the block's final ids from its block-local ones."""
    output = _worker_array(str(Path(job.work) / io.LEVEL0), job.run_key)
    output[block.box.slices()] = lookup[_scratch(job, source)[block.box.slices()]].astype(output.dtype)
    resume.record_block(job.work, f"relabel-{block.name}")


def _lookups(final: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Per block, final id by block-local id (index 0 = none -> 0)."""
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return [np.concatenate([[0], final[a:b]]) for a, b in zip(offsets[:-1], offsets[1:])]


def _graph(job: Job) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The whole fragment graph: edges between fragments (dense ids, after stitching the pieces that block
    faces cut), their statistics, the fragment of each piece, each piece's size, and the number of pieces
    of each block."""
    sizes = [_load_table(job, FRAGMENTS, block)["sizes"] for block in job.grid]
    counts = np.array([len(s) for s in sizes], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    tables = [_load_table(job, "edges", block) for block in job.grid]
    uv, stats = merge_tables([(t["uv"], t["stats"]) for t in tables])

    def dense(ids: np.ndarray) -> np.ndarray:
        block_index, local = split_global_ids(ids.ravel())
        return (offsets[block_index] + local - 1).reshape(-1, 2)

    stitched = agglomerate.union(dense(np.concatenate([t["stitches"] for t in tables])), stats, int(offsets[-1]), 0)
    edges, stats = merge_tables([(np.sort(stitched[dense(uv)], axis=1).astype(np.uint64), stats)])
    loops = edges[:, 0] == edges[:, 1]
    return edges[~loops].astype(np.int64), stats[~loops], stitched, np.concatenate(sizes) if sizes else np.zeros(0, np.int64), counts


class _Run:
    """The phases of one segment run on a client, skipping what an earlier run of the same key finished."""

    def __init__(self, client: Any, job: Job, finished: set[str], stall_timeout_s: float) -> None:
        self.client, self.job, self.finished, self.stall_timeout_s = client, job, finished, stall_timeout_s

    def phase(self, name: str, function: Any, extra: list[dict[str, Any]] | None = None) -> int:
        """Run `function(block, job, **extra[i])` for every block not yet recorded in phase `name`."""
        todo = [(i, b) for i, b in enumerate(self.job.grid) if f"{name}-{b.name}" not in self.finished]
        print(f"segment {name}: {len(self.job.grid)} blocks, {len(self.job.grid) - len(todo)} already done",
              flush=True)
        if todo:
            items = [(function, block, extra[i] if extra else {}) for i, block in todo]
            tasks.run_tasks(self.client, _call, items, f"segment {name}", self.stall_timeout_s,
                            describe=lambda item: f"block {item[1].box}", job=self.job)
        return len(todo)


def _call(item: tuple[Any, Block, dict[str, Any]], job: Job) -> None:
    function, block, extra = item
    function(block, job, **extra)


def _create_scratch(partial: Path, name: str, volume: Shape, chunks: Shape) -> None:
    zarr.create_array(str(partial / WORK / name), shape=volume, chunks=chunks, dtype=np.uint32, fill_value=0,
                      overwrite=True)
    for phase in (FRAGMENTS, "edges", FLOODS):
        (partial / WORK / phase).mkdir(parents=True, exist_ok=True)


def segment(probabilities_path: str | os.PathLike, output: str | os.PathLike, *, method: Method,
            mode: Literal["2d", "3d"], connectivity: int | None, threshold: float, seed_threshold: float,
            seed_distance: int, agglomeration: str, merge_threshold: float, min_size: int, block: list[int],
            context: list[int], compression: dict[str, Any], cluster_settings: dict[str, Any],
            stall_timeout_s: float = 1800) -> dict[str, int]:
    """Write the cell segmentation (consecutive ids 1..N, 0 = boundary) of a probability image at `output`.

    Args:
        method: 'components' (threshold + connected components), 'watershed'
            (seeded watershed of 1 - p inside p > threshold, seeds: components of
            p > seed_threshold) or 'agglomerate' (watershed fragments from
            distance-transform maxima, then `agglomeration` on their graph).
        mode: '2d' (each section on its own) or '3d' (through sections).
        connectivity: 4 or 8 in 2d; 6, 18 or 26 in 3d (components and seeds);
            None: face neighbours (4 in 2d, 6 in 3d).
        threshold: cell probability above which a voxel is cell.
        seed_threshold: 'watershed' seeds lie above this cell probability.
        seed_distance: 'agglomerate': pixels between fragment seeds (at least).
        agglomeration: 'mean_threshold', 'multicut' or 'gasp' (see `agglomerate`).
        merge_threshold: 'agglomerate': fragments whose shared boundary has a
            lower mean boundary probability (1 - p) merge.
        min_size: segments of fewer voxels become 0.
        block: (z, y, x) block shape, rounded up to whole output chunks.
        context: (z, y, x) voxels each block reads beyond its own region (z
            is ignored in 2d: sections are independent).
        compression: the output's codec (see `io.make_compressor`).
        cluster_settings: the Dask cluster (see `cluster.connect`).
        stall_timeout_s: stop when no block finishes for this long.

    Returns the number of blocks, the number computed in this run (over all
    phases) and the number of segments.
    """
    started = provenance.now()
    connectivity = connectivity or FACE_CONNECTIVITY.get(mode, 0)
    context = [0, *context[1:]] if mode == "2d" else list(context)
    settings = Settings(method, mode, connectivity, threshold, seed_threshold, seed_distance, agglomeration,
                        merge_threshold, min_size)
    settings.check()
    probabilities = io.open_image(probabilities_path)
    if probabilities.ndim != 4 or probabilities.shape[0] <= CELL_CHANNEL:
        raise io.InputError(f"{probabilities_path}: expected class probabilities (c, z, y, x) with a cell channel, "
                            f"got shape {probabilities.shape}")
    volume = probabilities.shape[1:]
    voxel, unit = io.voxel_size(probabilities_path)
    layout = io.layout(probabilities_path)
    unit_shape = io.write_unit(probabilities)[1:]
    block_shape = aligned_block_shape(tuple(block), unit_shape, volume)
    key = resume.run_key(probabilities=provenance.input_fingerprint(probabilities_path), settings=asdict(settings),
                         block=block_shape, context=list(context), layout=layout, compression=compression)

    def create(partial: Path) -> zarr.Array:
        image = io.create_image(partial, volume, np.uint32, compression=compression, voxel_size=voxel, unit=unit,
                                name="segmentation", labels=True, **layout)
        _create_scratch(partial, FRAGMENTS, volume, unit_shape)
        _create_scratch(partial, FLOODS, volume, unit_shape)
        return image

    with resume.resumable_image(output, key, create) as target:
        if target is None:
            print(f"segment: {output} is already complete for these probabilities and settings", flush=True)
            return {**io.image_attrs(output)["provenance"]["blocks"], "computed": 0}
        job = Job(str(probabilities_path), str(target.partial), volume, block_shape, tuple(context), tuple(voxel),
                  settings, key)
        with cluster.connect(**cluster_settings) as client:
            run = _Run(client, job, target.finished, stall_timeout_s)
            computed = run.phase(FRAGMENTS, fragment_block) + run.phase("edges", edge_block)
            edges, stats, stitched, sizes, counts = _graph(job)
            solver = "union" if method != "agglomerate" else agglomeration
            fragments = int(stitched.max()) + 1 if len(stitched) else 0
            nodes = agglomerate.solve(solver, edges, stats, fragments, merge_threshold)[stitched]
            print(f"segment: graph of {fragments} fragments and {len(edges)} edges solved ({solver})", flush=True)
            source = FRAGMENTS
            if method == "watershed":
                seeds = _lookups(agglomerate.consecutive(nodes, sizes, 0), counts)
                near = [_neighbours(job, b) for b in job.grid]
                computed += run.phase(FLOODS, flood_block, [{"seed_ids": {i: seeds[i] for i in n}} for n in near])
                floods = [_load_table(job, FLOODS, b) for b in job.grid]
                nodes = np.concatenate([f["seeds"] for f in floods]).astype(np.int64)
                sizes = np.concatenate([f["sizes"] for f in floods]).astype(np.int64)
                counts = np.array([len(f["seeds"]) for f in floods], np.int64)
                source = FLOODS
            final = agglomerate.consecutive(nodes, sizes, min_size)
            segments = int(final.max()) if len(final) else 0
            _fit_dtype(target.partial, segments)
            lookups = _lookups(final, counts)
            computed += run.phase("relabel", relabel_block, [{"lookup": lookups[b.index], "source": source}
                                                             for b in job.grid])
            io.remove(target.partial / WORK)
            target.levels_written = io.write_pyramid(target.partial)  # on the cluster's workers
        stats_out = {"blocks": len(job.grid), "computed": computed, "segments": segments}
        io.set_attrs(target.partial, provenance=provenance.record(
            "segment", {**asdict(settings), "block": list(block_shape), "context": list(context)},
            {"probabilities": str(probabilities_path)}, started, blocks=stats_out))
    return stats_out


def _neighbours(job: Job, block: Block) -> list[int]:
    """Indices of the blocks that the block's read region (with context) overlaps."""
    read = block.read_box(job.context, job.volume)
    counts = [-(-n // s) for n, s in zip(job.volume, job.block)]
    ranges = [range(a // s, (b - 1) // s + 1) for a, b, s in zip(read.start, read.stop, job.block)]
    return [int(np.ravel_multi_index(position, counts)) for position in itertools.product(*ranges)]


def _fit_dtype(partial: Path, segments: int) -> None:
    """Level 0 as uint64 when the segment count does not fit uint32 (made uint32 at the start)."""
    array = io.open_image(partial)
    if segments < 2**32 or array.dtype == np.uint64:
        return
    io.create_level(zarr.open_group(str(partial), mode="a"), io.LEVEL0, array.shape, array.chunks, np.uint64,
                    array.compressors, array.shards, overwrite=True)
