"""Blockwise segmentation of cell probabilities on the Dask cluster: no process holds a section whole.

The volume is cut into blocks of whole output chunks (`blocks`); every step
is a set of Dask tasks, one per block, recorded per block when done
(`blockwise`), so a killed run resumes with only the missing blocks:

- `components`: connected components of p > threshold, blockwise and exact.
- `watershed`: the seeds (components of p > seed_threshold) as above, then
  each block floods 1 - p inside p > threshold from the global seeds over
  its region and context.
- `agglomerate`: each block computes watershed fragments on its region and
  context (`fragments`) and keeps its own part; pieces that a block face
  cut are stitched back (`stitching`); each block lists its contacts with
  exactly mergeable boundary statistics (`region_graph`); the
  agglomeration (`agglomerate`) runs on the graph alone, one task per group
  of blocks whose pieces can join (`independent_groups`: a row of blocks
  along z in 2d, where sections are segmented on their own; all blocks in
  3d), so in 2d no process holds the graph of the whole volume.

Ids are unique without coordination (block index in the high bits, see
`blocks`); each group numbers its segments 1..n (segments under `min_size`
voxels become 0) in a table per block, the groups' counts give their
offsets, and each block writes its final ids (uint32, or uint64 when the
total does not fit).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Literal

import fastremap
import numpy as np
import zarr

from ..core.errors import ConfigError, InputError
from ..core.geometry import Box
from ..core.probabilities import CELL_CHANNEL
from ..core.stage_settings import checked_stage
from ..distributed import cluster, records, tasks
from ..distributed.blocks import Block, BlockSelection, aligned_block_shape, block_grid, block_indices, global_ids
from ..distributed.blockwise import (
    SCRATCH,
    Mask,
    PieceGraph,
    Runner,
    Work,
    components,
    independent_groups,
    open_array,
    piece_graph,
    read_cell_probability,
    read_global_ids,
)
from ..distributed.tuning import choose_merge_threshold
from ..segmentation import agglomerate
from ..segmentation.fragments import seeded_flood, watershed_fragments
from ..segmentation.labeling import FACE_CONNECTIVITY, forward_offsets
from ..segmentation.region_graph import block_edges, quantize
from ..segmentation.settings import Method, Settings
from ..segmentation.stitching import face_axes, face_views, outside_layer, stitch_pairs
from ..storage import chunk_files, chunk_hashes, ome_zarr, outputs, provenance, pyramid, pyramid_writer, tissue_mask

SEEDS, FRAGMENTS, FLOODS, SEGMENTS = "seeds", "fragments", "floods", "segments"
NUMBERING = "numbering"  # the state relabel needs from the phases before it (see `numbering`)


def fragment_block(block: Block, work: Work, probabilities: str, settings: Settings,
                   voxel_size: tuple[float, ...]) -> None:
    """Agglomerate (worker): watershed fragments of the block and its context; keep the block's own part
    (block-local ids), each piece's size, and the layers just outside its faces as it saw them."""
    read = block.read_box(work.context, work.volume)
    fragments = watershed_fragments(read_cell_probability(probabilities, read, work), settings.threshold,
                                    settings.seed_distance, settings.mode, voxel_size)
    own = block.box.relative_to(read)
    local, remap = fastremap.renumber(np.ascontiguousarray(fragments[own]), preserve_zero=True)
    own_ids = np.zeros(int(fragments.max()) + 1, np.uint32)
    own_ids[list(remap)] = list(remap.values())
    work.scratch(FRAGMENTS)[block.box.slices()] = local.astype(np.uint32)
    work.save_table(FRAGMENTS, block, sizes=np.bincount(local.ravel())[1:],
                    **face_views(fragments, own, own_ids, settings.mode))


def edge_block(block: Block, work: Work, probabilities: str, settings: Settings) -> None:
    """Agglomerate (worker): the contacts the block owns between fragments (global ids) with their boundary
    statistics, and the pieces it stitches with its forward neighbours."""
    ids, own = read_global_ids(block, work, FRAGMENTS)
    read = block.read_box((1, 1, 1), work.volume)
    boundary = quantize(1.0 - read_cell_probability(probabilities, read, work).astype(np.float64))
    uv, stats = block_edges(ids, boundary, own, forward_offsets(settings.mode, FACE_CONNECTIVITY[settings.mode]))
    work.save_table("edges", block, uv=uv, stats=stats, stitches=_stitches(block, work, ids, own, settings.mode))


def _stitches(block: Block, work: Work, ids: np.ndarray, own: tuple[slice, ...], mode: str) -> np.ndarray:
    """Pairs of pieces (global ids) that the block and its forward neighbours agree are one fragment."""
    views = work.load_table(FRAGMENTS, block)
    pairs = [np.zeros((0, 2), np.uint64)]
    for axis in face_axes(mode):
        after, neighbour = outside_layer(own, axis, 1, ids.shape), work.neighbour_after(block, axis)
        if after is None or neighbour is None:
            continue
        theirs = work.load_table(FRAGMENTS, neighbour)
        if f"face_{axis}_1" not in views or f"face_{axis}_0" not in theirs:
            continue  # no context along this axis: the pieces stay apart (the graph may still merge them)
        before = (*own[:axis], slice(own[axis].stop - 1, own[axis].stop), *own[axis + 1:])
        pairs.append(stitch_pairs(ids[before], ids[after], global_ids(views[f"face_{axis}_1"], block.index),
                                  global_ids(theirs[f"face_{axis}_0"], neighbour.index)))
    return np.concatenate(pairs)


def flood_block(block: Block, work: Work, probabilities: str, settings: Settings,
                seed_ids: dict[int, np.ndarray]) -> None:
    """Watershed (worker): flood the block and its context from the global seeds; keep, per flooded region
    of the block's own part, its seed and size."""
    read = block.read_box(work.context, work.volume)
    local = work.scratch(SEEDS)[read.slices()]
    owner = block_indices(read, work.block, work.volume)
    seeds = np.zeros(local.shape, np.int64)
    for index, lookup in seed_ids.items():
        here = owner == index
        seeds[here] = lookup[local[here]]
    cell = read_cell_probability(probabilities, read, work)
    own = seeded_flood(cell, seeds, settings.threshold, settings.mode)[block.box.relative_to(read)]
    seed, local_ids, sizes = np.unique(own, return_inverse=True, return_counts=True)
    first = 1 if len(seed) and seed[0] == 0 else 0
    work.scratch(FLOODS)[block.box.slices()] = (local_ids.reshape(own.shape) + 1 - first).astype(np.uint32)
    work.save_table(FLOODS, block, seeds=seed[first:], sizes=sizes[first:])


def save_segments(work: Work, blocks: list[Block], lookups: list[np.ndarray]) -> None:
    """Each block's table of phase `SEGMENTS`: the segment (1..n of its group, 0 = none) of each block-local id,
    and n."""
    segments = max((int(lookup.max()) for lookup in lookups if len(lookup)), default=0)
    for block, lookup in zip(blocks, lookups):
        work.save_table(SEGMENTS, block, lookup=lookup, segments=np.int64(segments))


def relabel_block(block: Block, work: Work, offset: int, source: str, image: str,
                  level_steps: list[tuple[int, int, int]]) -> None:
    """Last step (worker): the block's final ids (its group's segments after `offset`) from its block-local ones,
    written into level 0 of `image` and, downsampled by `level_steps` in turn, into the pyramid levels that the
    block covers on its own."""
    level0 = open_array(str(Path(image) / ome_zarr.LEVEL0), work.run_key, "r+")
    lookup = work.load_table(SEGMENTS, block)["lookup"]
    labels = np.where(lookup > 0, lookup + offset, 0)[work.scratch(source)[block.box.slices()]].astype(level0.dtype)
    level0[block.box.slices()] = labels
    hashes = chunk_hashes.chunk_hashes(labels, block.box.start, level0.chunks)
    box = block.box
    for level, step in enumerate(level_steps, start=1):
        labels = pyramid.downsample(labels, step, "mode")
        box = Box(box.start // step, box.stop.ceil_division(step))
        open_array(str(Path(image) / str(level)), work.run_key, "r+")[box.slices()] = labels
    records.record_block(work.root, f"relabel-{block.name}", hashes)


def block_levels(image: Path, block: tuple[int, ...], volume: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """The steps of the leading pyramid levels (those that halve y and x only) in which every block of shape
    `block` covers whole chunks, so blocks write them without touching each other's chunks."""
    steps, factor = [], np.ones(3, np.int64)
    for array, step, _ in pyramid_writer.slab_levels(image):
        factor = factor * np.array(step)
        aligned = all(b >= n or (b % f == 0 and (b // f) % c == 0)
                      for b, n, f, c in zip(block, volume, factor, array.chunks))
        if not aligned:
            break
        steps.append(tuple(int(f) for f in step))
    return steps


Segmented = tuple[str, list[list[Block]], dict[str, Any]]


def segment_blocks(runner: Runner, probabilities: str, settings: Settings, voxel_size: tuple[float, ...],
                   chunks: tuple[int, ...], labels: str | None, ignore_label: int | None = None) -> Segmented:
    """Every phase before relabelling, by the method of `settings` (see `METHODS`): each block's table of phase
    `SEGMENTS` saved; returns the scratch array that holds the block-local ids, the groups of blocks numbered
    on their own (see `save_segments`), and how the merge threshold was chosen (on `labels`, whose voxels of
    `ignore_label` are not annotated)."""
    return METHODS[settings.method](runner, probabilities, settings, voxel_size, chunks, labels, ignore_label)


def _numbered(work: Work, graph: PieceGraph, segment_of: np.ndarray, min_size: int) -> list[list[Block]]:
    """The segments of the whole grid's pieces numbered 1..N in one group (the client holds the graph)."""
    save_segments(work, work.grid, graph.lookups(agglomerate.consecutive(segment_of, graph.sizes, min_size)))
    return [work.grid]


def component_pieces(runner: Runner, probabilities: str, s: Settings, voxel_size: tuple[float, ...],
                     chunks: tuple[int, ...], labels: str | None, ignore_label: int | None) -> Segmented:
    """Connected components of the cell probability above `threshold`."""
    graph, segment_of = components(runner, FRAGMENTS, Mask(probabilities, "probability", s.threshold), s.mode,
                                   s.connectivity, chunks)
    return FRAGMENTS, _numbered(runner.work, graph, segment_of, s.min_size), {}


def watershed_pieces(runner: Runner, probabilities: str, s: Settings, voxel_size: tuple[float, ...],
                     chunks: tuple[int, ...], labels: str | None, ignore_label: int | None) -> Segmented:
    """Seeds (components above `seed_threshold`) flooded over the cells of each block."""
    work = runner.work
    seeds, seed_of = components(runner, SEEDS, Mask(probabilities, "probability", s.seed_threshold), s.mode,
                                s.connectivity, chunks)
    seed_ids = seeds.lookups(agglomerate.consecutive(seed_of, seeds.sizes, 0))
    work.ensure_scratch(FLOODS, chunks)
    runner.phase(FLOODS, flood_block, [{"seed_ids": {i: seed_ids[i] for i in work.neighbours(b)}}
                                       for b in work.grid], probabilities=probabilities, settings=s)
    floods = [work.load_table(FLOODS, block) for block in work.grid]
    counts = np.array([len(f["seeds"]) for f in floods], np.int64)
    graph = PieceGraph(np.zeros((0, 2), np.int64), np.zeros((0, 4), np.int64), np.arange(counts.sum()),
                       np.concatenate([f["sizes"] for f in floods]).astype(np.int64), counts)
    segment_of = np.concatenate([f["seeds"] for f in floods]).astype(np.int64)
    return FLOODS, _numbered(work, graph, segment_of, s.min_size), {}


def agglomerate_group(blocks: list[Block], work: Work, settings: Settings, threshold: float) -> tuple[int, int]:
    """Worker: the agglomeration of one group of blocks' fragment graph, its segments numbered and saved per
    block (see `save_segments`); the group's fragments and edges."""
    graph = piece_graph(work, FRAGMENTS, "edges", blocks)
    segment_of = agglomerate.solve(settings.agglomeration, graph.edges, graph.stats, graph.fragments, threshold)
    final = agglomerate.consecutive(segment_of[graph.fragment_of_piece], graph.sizes, settings.min_size)
    save_segments(work, blocks, graph.lookups(final))
    return graph.fragments, len(graph.edges)


def agglomerated_pieces(runner: Runner, probabilities: str, s: Settings, voxel_size: tuple[float, ...],
                        chunks: tuple[int, ...], labels: str | None, ignore_label: int | None) -> Segmented:
    """Watershed fragments per block, their region graph, and the agglomeration of each group of blocks (see
    `agglomerate`); the merge threshold is chosen on the groups that hold the tune sections."""
    work = runner.work
    work.ensure_scratch(FRAGMENTS, chunks)
    runner.phase(FRAGMENTS, fragment_block, probabilities=probabilities, settings=s, voxel_size=voxel_size)
    runner.phase("edges", edge_block, probabilities=probabilities, settings=s)
    groups = independent_groups(work.grid, s.mode)
    threshold, tuning = s.merge_threshold, {}
    if s.tuned:
        tune_sections = {b.index for b in dataclasses.replace(work, sections=s.tune_sections).grid}
        tune_blocks = [b for group in _groups_holding(groups, tune_sections) for b in group]
        graph = piece_graph(work, FRAGMENTS, "edges", tune_blocks)

        def solve(candidate: float) -> np.ndarray:
            return agglomerate.solve(s.agglomeration, graph.edges, graph.stats, graph.fragments, candidate)

        threshold, curve = choose_merge_threshold(runner, graph, tune_blocks, solve, list(s.merge_thresholds),
                                                  s.min_size, str(labels), list(s.tune_sections), FRAGMENTS, chunks,
                                                  ignore_label)
        tuning = {"merge_threshold": threshold, "tune_sections": list(s.tune_sections), "curve": curve}
    missing = {b.index for b in work.grid if f"{SEGMENTS}-{b.name}" not in runner.finished}
    todo = _groups_holding(groups, missing)
    print(f"agglomerate: {len(groups)} groups of blocks, {len(groups) - len(todo)} already done", flush=True)
    sizes = tasks.run_tasks(runner.client, agglomerate_group, todo, "agglomerate", runner.stall_timeout_s,
                            describe=lambda group: f"the blocks of {group[0].box} to {group[-1].box}",
                            weight=len, writes=work.root, work=work, settings=s, threshold=threshold)
    runner.computed += len(missing)
    print(f"segment: {sum(f for f, _ in sizes)} fragments, {sum(e for _, e in sizes)} edges agglomerated "
          f"({s.agglomeration}, merge threshold {threshold}) in {len(todo)} groups", flush=True)
    return FRAGMENTS, groups, tuning


def _groups_holding(groups: list[list[Block]], indices: set[int]) -> list[list[Block]]:
    """The groups with a block of one of `indices`."""
    return [group for group in groups if any(b.index in indices for b in group)]


# segment.method -> the phases that make its segments; a new method is one function here (and its Literal above)
METHODS: dict[str, Callable[..., Segmented]] = {"components": component_pieces, "watershed": watershed_pieces,
                                                "agglomerate": agglomerated_pieces}


@checked_stage
def segment(probabilities_path: str | os.PathLike, output: str | os.PathLike, *, method: Method,
            mode: Literal["2d", "3d"], connectivity: int | None, threshold: float, seed_threshold: float,
            seed_distance: int, agglomeration: str, merge_threshold: float | Literal["auto"],
            merge_thresholds: list[float], tune_sections: list[int] | None, labels: str | None,
            threshold_from: str | None, min_size: int, block: list[int], context: list[int],
            compression: dict[str, Any], cluster_settings: dict[str, Any],
            stall_timeout_s: float = 1800, ignore_label: int | None = None,
            mask: str | None = None) -> dict[str, Any]:
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
            lower mean boundary probability (1 - p) merge; 'auto': the one of
            `merge_thresholds` with the lowest Rand error on `tune_sections` of
            `labels` (see `distributed.tuning`), or the one chosen so for the
            segmentation `threshold_from`.
        merge_thresholds: the candidates of 'auto'.
        tune_sections: [first, last) sections with labels that 'auto' scores on; None: all.
        labels: the label image of 'auto' (None otherwise, or with `threshold_from`).
        threshold_from: 'auto' for a volume without labels: a segmentation this
            stage wrote with a tuned threshold (of another volume), whose chosen
            merge threshold is applied here (None: tune on `labels`).
        min_size: segments of fewer voxels become 0.
        block: (z, y, x) block shape, rounded up to whole output chunks.
        context: (z, y, x) voxels each block reads beyond its own region (z
            is ignored in 2d: sections are independent).
        compression: the output's codec (see `ome_zarr.make_compressor`).
        cluster_settings: the Dask cluster (see `cluster.connect`).
        stall_timeout_s: stop when no block finishes for this long.
        ignore_label: 'auto' on `labels`: the label value of unannotated voxels, which the tuning does not score.
        mask: ingest's tissue mask of the volume (see `storage.tissue_mask`): the blocks it does not touch are
            written as zeros and read as zero probability by their neighbours (see `blockwise`); None: all blocks.

    Returns the number of blocks, the block tasks computed in this run (over
    all phases), the blocks outside the mask, the number of segments and,
    for 'auto', the chosen merge threshold with every candidate's errors.
    """
    started = provenance.now()
    context = [0, *context[1:]] if mode == "2d" else list(context)
    settings = Settings.of(method=method, mode=mode, connectivity=connectivity, threshold=threshold,
                           seed_threshold=seed_threshold, seed_distance=seed_distance, agglomeration=agglomeration,
                           merge_threshold=merge_threshold, merge_thresholds=merge_thresholds,
                           tune_sections=tune_sections, min_size=min_size)
    applied = {}
    if settings.tuned and threshold_from is not None:
        applied = tuned_threshold(threshold_from)
        settings = dataclasses.replace(settings, merge_threshold=applied["merge_threshold"], tune_sections=None)
    elif settings.tuned and labels is None:
        raise ConfigError("segment.merge_threshold 'auto' needs the labels to tune on, or a segmentation whose "
                          "tuned threshold to apply (threshold_from)")
    probabilities = ome_zarr.open_input(probabilities_path)
    if probabilities.ndim != 4 or probabilities.shape[0] <= CELL_CHANNEL:
        raise InputError(f"{probabilities_path}: expected class probabilities (c, z, y, x) with a cell channel, "
                            f"got shape {probabilities.shape}")
    volume = probabilities.shape[1:]
    if settings.tuned and settings.tune_sections is None:
        settings = dataclasses.replace(settings, tune_sections=(0, volume[0]))
    voxel, unit = ome_zarr.voxel_size(probabilities_path)
    layout = ome_zarr.layout(probabilities_path)
    chunks = chunk_files.stored_unit(probabilities)[1:]
    block_shape = aligned_block_shape(tuple(block), chunks, volume)
    inputs = {"probabilities": str(probabilities_path), **({"labels": str(labels)} if settings.tuned else {}),
              **({"tuned": str(threshold_from)} if applied else {}), **({"mask": str(mask)} if mask else {})}
    fingerprints = provenance.fingerprint_inputs(inputs)
    tissue = tissue_mask.open_mask(mask, volume, probabilities_path)  # refused before anything is written
    ignore_label = ignore_label if settings.tuned else None
    key = records.run_key(inputs=fingerprints, settings=asdict(settings), block=block_shape, context=context,
                         layout=layout, compression=compression, **({"ignore_label": ignore_label}
                                                                    if ignore_label is not None else {}))

    def create(partial: Path) -> zarr.Array:
        return ome_zarr.create_image(partial, volume, np.uint32, compression=compression, voxel_size=voxel, unit=unit,
                               name="segmentation", labels=True, origin=ome_zarr.origin(probabilities_path), **layout)

    with records.resumable_image(output, key, create) as target:
        if target is None:
            print(f"segment: {output} is already complete for these probabilities and settings", flush=True)
            return {**ome_zarr.image_attrs(output)["provenance"]["blocks"], "computed": 0}
        work = Work(str(target.partial), volume, block_shape, tuple(context), key,
                    selection=_touched_blocks(tissue, volume, block_shape))
        with cluster.connect(**cluster_settings) as client:
            runner = Runner(client, work, stall_timeout_s)
            numbered = numbering(runner, str(probabilities_path), settings, tuple(voxel), chunks, labels,
                                 ignore_label)
            segments, tuning = numbered["segments"], numbered["tuning"]
            steps = block_levels(target.partial, block_shape, volume)
            # every block: those outside the mask write zeros
            runner.phase("relabel", relabel_block, [{"offset": numbered["offsets"][block.name]}
                                                    for block in work.grid],
                         True, source=numbered["source"], image=str(target.partial), level_steps=steps)
            outputs.remove(target.partial / SCRATCH)
            target.levels_written = pyramid_writer.write_pyramid(target.partial, len(steps))  # the rest, on the workers
        skipped = sum(not work.computes(block) for block in work.grid)
        stats = {"blocks": len(work.grid), "computed": runner.computed, "skipped": skipped, "segments": segments,
                 **({"tuning": tuning or applied} if tuning or applied else {})}
        ome_zarr.set_attrs(target.partial, provenance=provenance.record(
            "segment", {**asdict(settings), "block": list(block_shape), "context": context}, inputs, started,
            fingerprints, blocks=stats))
    return stats


def numbering(runner: Runner, probabilities: str, settings: Settings, voxel_size: tuple[float, ...],
              chunks: tuple[int, ...], labels: str | None, ignore_label: int | None) -> dict[str, Any]:
    """What relabel needs from every phase before it (see `segment_blocks`): the scratch array of block-local
    ids, each block's offset, the number of segments and the tuning. Kept with the records once made, so a
    run killed after relabel removed the scratch tables resumes from it; made here (the finished phases kept)
    otherwise, with level 0 made wide enough for the count."""
    work = runner.work
    kept = records.load_state(work.root, NUMBERING)
    if kept is not None:
        return kept
    source, groups, tuning = segment_blocks(runner, probabilities, settings, voxel_size, chunks, labels, ignore_label)
    counts = [int(work.load_table(SEGMENTS, group[0])["segments"]) for group in groups]
    offsets = np.cumsum([0, *counts[:-1]])
    state = {"source": source, "segments": sum(counts), "tuning": tuning,
             "offsets": {block.name: int(offset) for group, offset in zip(groups, offsets) for block in group}}
    _fit_dtype(Path(work.root), state["segments"])
    records.save_state(work.root, NUMBERING, state)
    return state


def _touched_blocks(tissue: tissue_mask.TissueMask | None, volume: tuple[int, ...],
                    block: tuple[int, ...]) -> BlockSelection | None:
    """The blocks of the grid that the tissue mask touches (None without a mask: every block)."""
    return None if tissue is None else BlockSelection.of([tissue.touches(b.box) for b in block_grid(volume, block)])


def tuned_threshold(segmentation: str | os.PathLike) -> dict[str, Any]:
    """The merge threshold that segment chose for `segmentation` (with 'auto', on labels), where, and on which
    sections: what a volume without labels applies."""
    tuning = provenance.recorded_tuning(segmentation)
    if "curve" not in tuning:
        raise InputError(f"{segmentation}: its provenance holds no tuned merge threshold (blocks.tuning); it was "
                         "not segmented with merge_threshold 'auto' on labels")
    return {"merge_threshold": tuning["merge_threshold"], "tuned_on": str(segmentation),
            "tune_sections": tuning["tune_sections"]}


def _fit_dtype(partial: Path, segments: int) -> None:
    """Level 0 as uint64 when the segment count does not fit uint32 (it is made uint32)."""
    array = ome_zarr.open_image(partial)
    if segments < 2**32 or array.dtype == np.uint64:
        return
    ome_zarr.create_level(zarr.open_group(str(partial), mode="a"), ome_zarr.LEVEL0, array.shape, array.chunks,
                          np.uint64, array.compressors, array.shards, overwrite=True)
