"""Blockwise work on the Dask cluster: block tasks recorded per block, scratch arrays and per-block tables,
and exact connected components of masks that no process holds whole.

A run may compute a selection of its blocks alone (those a tissue mask
touches, `BlockSelection`): the others have no pieces, edges or seeds (an
empty table of every phase), and the probabilities the run reads are zero
inside them, so the result equals the whole grid's run on probabilities
zeroed there.

A run's `Work` folder holds its records (`records.RECORDS`: one line per
finished block and phase, written last), its scratch arrays (block-local
ids) and its per-block tables (.npz). A phase skips the blocks an earlier run
of the same key recorded, so a killed run resumes with the missing ones.

Components (`components`): each block labels its own region (block-local
ids), lists the contacts it owns between ids across its faces, and one
union over all contacts (scipy's connected components of the contact graph)
gives every piece its component: the same partition as labelling the
whole volume at once.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import zarr

from ..core.geometry import Box, Shape, ceil_division
from ..core.probabilities import CELL_CHANNEL, as_probability
from ..segmentation import agglomerate
from ..segmentation.cells import annotated, cell_mask, without_ignored
from ..segmentation.labeling import forward_offsets, label_components, touching_pairs
from ..segmentation.region_graph import merge_tables
from ..storage import ome_zarr
from ..storage.chunk_files import CheckedReads
from . import records, tasks
from .blocks import Block, BlockSelection, block_grid, block_indices, global_ids, split_global_ids

SCRATCH = "work"  # inside the run's folder: scratch arrays and tables
# the table of every phase of a block outside the run's selection: no pieces, edges, stitches or seeds
EMPTY_TABLE = {"sizes": np.zeros(0, np.int64), "uv": np.zeros((0, 2), np.uint64), "stats": np.zeros((0, 4), np.int64),
               "stitches": np.zeros((0, 2), np.uint64), "seeds": np.zeros(0, np.int64)}


@functools.lru_cache(maxsize=32)
def open_array(path: str, run_key: str, mode: str = "r") -> zarr.Array | CheckedReads:
    """An opened Zarr array (read-only ones name a chunk file that cannot be decoded), reused by the tasks of
    one run on a worker; keyed by the run, so a worker that outlives it never reuses metadata of an array
    since rewritten at the same path."""
    array = zarr.open_array(path, mode=mode)
    return CheckedReads(array, path) if mode == "r" else array


def read_cell_probability(image: str, box: Box, work: "Work") -> np.ndarray:
    """The cell channel of a probability image inside `box`, as float32 in [0, 1] (0 in the blocks outside the
    run's selection)."""
    values = open_array(str(Path(image) / ome_zarr.LEVEL0), work.run_key)[(CELL_CHANNEL, *box.slices())]
    return work.outside_zeroed(as_probability(values), box)


@dataclass(frozen=True)
class Work:
    """One blockwise run: its folder, the volume, the block grid, the context blocks read, the sections
    [first, last) it covers (None: all) and the blocks it computes (None: all)."""

    root: str
    volume: Shape
    block: Shape
    context: Shape
    run_key: str
    sections: tuple[int, int] | None = None
    selection: BlockSelection | None = None

    def computes(self, block: Block) -> bool:
        """Whether the run computes `block` (else it has no pieces, see the module docstring)."""
        return self.selection is None or block.index in self.selection

    def outside_zeroed(self, values: np.ndarray, box: Box) -> np.ndarray:
        """`values` of `box` with the voxels of blocks outside the selection set to 0."""
        if self.selection is None:
            return values
        return np.where(self.selection.kept()[block_indices(box, self.block, self.volume)], values, 0)

    @property
    def grid(self) -> list[Block]:
        """The blocks of the run (of the whole volume's grid, whose indices they keep)."""
        blocks = block_grid(self.volume, self.block)
        if self.sections is None:
            return blocks
        first, last = self.sections
        return [b for b in blocks if b.box.start[0] < last and b.box.stop[0] > first]

    def scratch(self, name: str) -> zarr.Array:
        return open_array(str(Path(self.root) / SCRATCH / name), self.run_key, "r+")

    def ensure_scratch(self, name: str, chunks: Shape) -> None:
        """A uint32 scratch array of block-local ids (0 = none), chunked as the outputs; kept when an earlier
        run of the same key made it."""
        if (Path(self.root) / SCRATCH / name).exists():
            return
        zarr.create_array(str(Path(self.root) / SCRATCH / name), shape=self.volume, chunks=chunks, dtype=np.uint32,
                          fill_value=0, overwrite=True)

    def save_table(self, phase: str, block: Block, **arrays: np.ndarray) -> None:
        """A block's table of a phase, written atomically, then the block's record of that phase."""
        path = Path(self.root) / SCRATCH / phase / f"{block.name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(path.stem + ".tmp.npz")
        np.savez(scratch, **arrays)
        os.replace(scratch, path)
        records.record_block(self.root, f"{phase}-{block.name}")

    def load_table(self, phase: str, block: Block) -> dict[str, np.ndarray]:
        """A block's table of a phase; `EMPTY_TABLE` for a block outside the selection that the phase skipped."""
        path = Path(self.root) / SCRATCH / phase / f"{block.name}.npz"
        if not self.computes(block) and not path.exists():
            return EMPTY_TABLE
        with np.load(path) as table:
            return dict(table)

    def neighbours(self, block: Block) -> list[int]:
        """Indices of the blocks that the block's read region (with context) overlaps."""
        read = block.read_box(self.context, self.volume)
        counts = ceil_division(self.volume, self.block)
        return [int(np.ravel_multi_index(position, counts)) for position in read.units(self.block)]

    def neighbour_after(self, block: Block, axis: int) -> Block | None:
        """The next block along `axis`, if any (made from its position alone: no grid is built)."""
        position = list(block.position)
        position[axis] += 1
        counts = ceil_division(self.volume, self.block)
        if position[axis] >= counts[axis]:
            return None
        return Block(int(np.ravel_multi_index(position, counts)), tuple(position),
                     Box.unit(position, self.block, self.volume))


class Runner:
    """Phases of one run on a Dask client, each skipping the blocks already recorded."""

    def __init__(self, client: Any, work: Work, stall_timeout_s: float) -> None:
        self.client, self.work, self.stall_timeout_s = client, work, stall_timeout_s
        (Path(work.root) / records.RECORDS).mkdir(parents=True, exist_ok=True)
        self.finished = records.finished_blocks(Path(work.root))
        self.computed = 0

    def phase(self, name: str, function: Callable[..., None], per_block: list[dict[str, Any]] | None = None,
              every_block: bool = False, /, **shared: Any) -> None:
        """`function(block, work, **per_block[i], **shared)` for every block not yet recorded in phase `name`
        (the function records it, see `Work.save_table`), of the run's selection unless `every_block`."""
        grid = self.work.grid
        skipped = [] if every_block else [block for block in grid if not self.work.computes(block)]
        todo = [block for block in grid if f"{name}-{block.name}" not in self.finished
                and (every_block or self.work.computes(block))]
        print(f"{name}: {len(grid)} blocks, {len(grid) - len(todo) - len(skipped)} already done"
              + (f", {len(skipped)} outside the tissue mask" if skipped else ""), flush=True)
        self.map(name, function, todo, [per_block[b.index] for b in todo] if per_block else None, **shared)
        self.computed += len(todo)

    def map(self, label: str, function: Callable[..., Any], blocks: list[Block],
            per_block: list[dict[str, Any]] | None = None, /, **shared: Any) -> list[Any]:
        """`function(block, work, **per_block[i], **shared)` for `blocks` on the cluster; the results in order."""
        results = dict(self.completed(label, function, blocks, per_block, **shared))
        return [results[i] for i in range(len(blocks))]

    def completed(self, label: str, function: Callable[..., Any], blocks: list[Block],
                  per_block: list[dict[str, Any]] | None = None, /, **shared: Any) -> Iterator[tuple[int, Any]]:
        """As `map`, but (position in `blocks`, result) as each block finishes, so results can be folded as they
        come instead of held all at once."""
        if not blocks:
            return iter(())
        items = [(function, block, per_block[i] if per_block else {}) for i, block in enumerate(blocks)]
        return tasks.completed_tasks(self.client, _call, items, label, self.stall_timeout_s,
                                     describe=lambda item: f"block {item[1].box}", writes=self.work.root,
                                     work=self.work, shared=shared)


def _call(item: tuple[Callable[..., Any], Block, dict[str, Any]], work: Work, shared: dict[str, Any]) -> Any:
    function, block, own = item
    return function(block, work, **own, **shared)


@dataclass(frozen=True)
class Mask:
    """Foreground read on a worker: cell probability above `threshold` ('probability', a (c, z, y, x) image),
    intensity at least `threshold` ('intensity', a (z, y, x) image) or the cells of a label image ('labels':
    > 0, touching instances of each section split; reads one pixel around)."""

    image: str
    kind: Literal["probability", "intensity", "labels"]
    threshold: float = 0.5
    ignore_label: int | None = None  # 'labels': the value of unannotated voxels, which are no cell
    within: Annotation | None = None  # only the voxels annotated there are foreground

    def read(self, box: Box, work: Work) -> np.ndarray:
        inside = self.within.read(box, work) if self.within else True
        if self.kind == "probability":
            return (read_cell_probability(self.image, box, work) > self.threshold) & inside
        if self.kind == "intensity":
            values = open_array(str(Path(self.image) / ome_zarr.LEVEL0), work.run_key)[box.slices()]
            return (np.asarray(values) >= self.threshold) & inside
        read = box.grow((0, 1, 1), (0, 1, 1)).clip(work.volume)  # cells of each section, as the 2D metrics see them
        labels = np.asarray(open_array(str(Path(self.image) / ome_zarr.LEVEL0), work.run_key)[read.slices()])
        labels = without_ignored(labels, self.ignore_label)
        return np.stack([cell_mask(section) for section in labels])[box.relative_to(read)]


@dataclass(frozen=True)
class Annotation:
    """The annotated voxels of a label image read on a worker: all but those of `ignore_label`."""

    labels: str
    ignore_label: int | None

    def read(self, box: Box, work: Work) -> np.ndarray:
        if self.ignore_label is None:
            return np.ones(box.shape, bool)
        return annotated(np.asarray(open_array(str(Path(self.labels) / ome_zarr.LEVEL0), work.run_key)[box.slices()]),
                         self.ignore_label)


def label_block(block: Block, work: Work, name: str, mask: Mask, mode: str, connectivity: int) -> None:
    """Components phase (worker): label the block's own region; keep each id's size."""
    local, _ = label_components(mask.read(block.box, work), mode, connectivity)
    work.scratch(name)[block.box.slices()] = local
    work.save_table(name, block, sizes=np.bincount(local.ravel())[1:])


def read_global_ids(block: Block, work: Work, name: str) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The ids of scratch `name` (global: block index in the high bits) in the block grown by one voxel,
    and the slices of the block's own region in it."""
    read = block.read_box((1, 1, 1), work.volume)
    ids = global_ids(work.scratch(name)[read.slices()], block_indices(read, work.block, work.volume))
    return ids, block.box.relative_to(read)


def contact_block(block: Block, work: Work, name: str, mode: str, connectivity: int) -> None:
    """Components phase (worker): the pairs of ids that touch at the contacts the block owns."""
    ids, own = read_global_ids(block, work, name)
    work.save_table(f"{name}-edges", block, uv=touching_pairs(ids, own, forward_offsets(mode, connectivity)))


@dataclass(frozen=True)
class PieceGraph:
    """The graph of every block's pieces (block-local ids) with dense ids 0..n-1, block by block: edges between
    fragments (pieces stitched across block faces into one), statistics, each piece's fragment and size,
    and the number of pieces per block."""

    edges: np.ndarray
    stats: np.ndarray
    fragment_of_piece: np.ndarray
    sizes: np.ndarray
    counts: np.ndarray

    @property
    def fragments(self) -> int:
        return int(self.fragment_of_piece.max()) + 1 if len(self.fragment_of_piece) else 0

    def lookups(self, segment_of_piece: np.ndarray) -> list[np.ndarray]:
        """Per block, the segment of each block-local id (index 0 = none -> 0)."""
        offsets = np.concatenate([[0], np.cumsum(self.counts)])
        return [np.concatenate([[0], segment_of_piece[a:b]]) for a, b in zip(offsets[:-1], offsets[1:])]


def piece_graph(work: Work, pieces: str, edges: str, blocks: list[Block] | None = None) -> PieceGraph:
    """Gather the tables of phases `pieces` (sizes) and `edges` (uv, optional stats and stitches) of `blocks`
    (default: the run's grid), whose edges must join their own pieces only (see `independent_groups`)."""
    grid = work.grid if blocks is None else blocks
    sizes = [work.load_table(pieces, block)["sizes"] for block in grid]
    counts = np.array([len(s) for s in sizes], np.int64)
    offsets = np.zeros(max(b.index for b in grid) + 2 if grid else 1, np.int64)  # first dense id of each block
    offsets[[b.index for b in grid]] = np.cumsum(counts) - counts
    tables = [work.load_table(edges, block) for block in grid]
    uv, stats = merge_tables([(t["uv"], t.get("stats", np.zeros((len(t["uv"]), 4), np.int64))) for t in tables])

    gathered = np.array([b.index for b in grid], np.int64)

    def dense(ids: np.ndarray) -> np.ndarray:
        block_index, local = split_global_ids(ids.ravel())
        if not np.isin(block_index, gathered).all():
            raise ValueError(f"{work.root}: an edge of phase {edges!r} joins a block outside the blocks gathered")
        return (offsets[block_index] + local - 1).reshape(-1, 2)

    stitches = np.concatenate([t.get("stitches", np.zeros((0, 2), np.uint64)) for t in tables])
    fragment_of_piece = agglomerate.union(dense(stitches), stats, int(counts.sum()), 0)
    edges_out, stats = merge_tables([(np.sort(fragment_of_piece[dense(uv)], axis=1).astype(np.uint64), stats)])
    loops = edges_out[:, 0] == edges_out[:, 1]
    return PieceGraph(edges_out[~loops].astype(np.int64), stats[~loops], fragment_of_piece,
                      np.concatenate(sizes).astype(np.int64) if sizes else np.zeros(0, np.int64), counts)


def independent_groups(blocks: list[Block], mode: str) -> list[list[Block]]:
    """The blocks in groups whose pieces never join another group's: in 2d the blocks of each row of the grid
    along z (sections are segmented on their own, so no edge or stitch crosses z), in 3d all of them."""
    if mode == "3d":
        return [blocks]
    rows: dict[int, list[Block]] = {}
    for block in blocks:
        rows.setdefault(block.position[0], []).append(block)
    return list(rows.values())


def components(runner: Runner, name: str, mask: Mask, mode: str, connectivity: int,
               chunks: Shape) -> tuple[PieceGraph, np.ndarray]:
    """Connected components of `mask` over the whole volume, blockwise: the piece graph (scratch `name`
    holds the block-local ids) and the component of each piece."""
    runner.work.ensure_scratch(name, chunks)
    runner.phase(name, label_block, name=name, mask=mask, mode=mode, connectivity=connectivity)
    runner.phase(f"{name}-edges", contact_block, name=name, mode=mode, connectivity=connectivity)
    graph = piece_graph(runner.work, name, f"{name}-edges")
    return graph, agglomerate.union(graph.edges, graph.stats, graph.fragments, 0)[graph.fragment_of_piece]
