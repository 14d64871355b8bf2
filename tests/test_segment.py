"""Blockwise segmentation on a real Dask cluster equals whole-volume processing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import probability_image, same_partition, segment_settings
from scipy import ndimage
from test_pyramid import assert_pyramid_equals

from unet_pipeline.core.probabilities import CELL_CHANNEL, as_probability
from unet_pipeline.distributed.blocks import block_grid, block_indices, global_ids
from unet_pipeline.distributed.blockwise import Mask, Runner, Work, components, independent_groups, piece_graph
from unet_pipeline.segmentation.in_memory import segmentations
from unet_pipeline.segmentation.labeling import FACE_CONNECTIVITY, forward_offsets
from unet_pipeline.segmentation.region_graph import block_edges, merge_tables, quantize
from unet_pipeline.segmentation.settings import Settings
from unet_pipeline.stages.segment import segment
from unet_pipeline.stages.synth import synthetic_volume
from unet_pipeline.storage import ome_zarr

STRUCTURES = {  # scipy's structuring element of each connectivity, an independent whole-volume reference
    ("2d", 4): np.pad(ndimage.generate_binary_structure(2, 1)[None], ((1, 1), (0, 0), (0, 0))),
    ("2d", 8): np.pad(ndimage.generate_binary_structure(2, 2)[None], ((1, 1), (0, 0), (0, 0))),
    ("3d", 6): ndimage.generate_binary_structure(3, 1),
    ("3d", 18): ndimage.generate_binary_structure(3, 2),
    ("3d", 26): ndimage.generate_binary_structure(3, 3),
}


def hard_cases(shape: tuple[int, int, int]) -> np.ndarray:
    """A cell-probability volume with what breaks naive blockwise labelling: smooth random blobs, an object
    winding through many blocks, voxels that touch only across a block corner or edge, and an empty region."""
    probability = ndimage.gaussian_filter(np.random.default_rng(0).random(shape), (1, 3, 3))
    probability = (probability - probability.min()) / (probability.max() - probability.min())
    probability[:, :, 30:] = 0  # empty blocks
    depth, height, _ = shape
    probability[:, 2, :30] = 1  # a bar through every block along x, in every section
    probability[depth // 2, :, 12] = 1  # a wall across blocks in y
    probability[2:5, 15:17, 15:17] = 0  # diagonal contacts across the corner of blocks (3, 16, 16) ...
    probability[2, 15, 15] = probability[3, 16, 16] = 1  # ... in 3D (corner) and 2D (edge)
    probability[3, 15, 16] = probability[3, 16, 15] = 0
    probability[3, 15, 15] = 1
    return probability.astype(np.float32)


@pytest.mark.parametrize("mode,connectivity", list(STRUCTURES))
def test_blockwise_components_equal_whole_volume_labelling(tmp_path, dask_cluster, mode, connectivity):
    probability = hard_cases((11, 40, 44))
    path = probability_image(tmp_path / "p.ome.zarr", probability, (1, 8, 8))
    output = tmp_path / "s.ome.zarr"
    stats = segment(path, output, **segment_settings(dask_cluster, method="components", mode=mode,
                                                     connectivity=connectivity, block=[3, 16, 16]))
    assert stats["blocks"] == 4 * 3 * 3  # 3 x 16 x 16 does not divide 11 x 40 x 44
    whole, count = ndimage.label(probability > 0.5, structure=STRUCTURES[mode, connectivity])
    labels = ome_zarr.open_image(output)[:]
    assert labels.dtype == np.uint32 and same_partition(labels, whole)
    assert stats["segments"] == count and set(np.unique(labels)) == set(range(count + 1))  # consecutive 1..N
    assert_pyramid_equals(output, labels, (50, 4, 4), (1, 8, 8), "mode")  # levels written block by block too


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_the_graph_of_each_independent_group_is_gathered_alone(tmp_path, dask_cluster, mode):
    from distributed import Client

    probability = hard_cases((6, 40, 44))
    path = probability_image(tmp_path / "p.ome.zarr", probability, (1, 8, 8))
    work = Work(str(tmp_path / "work"), probability.shape, (2, 16, 16), (0, 0, 0), "key")
    with Client(dask_cluster["address"]) as client:
        runner = Runner(client, work, 60)
        components(runner, "cells", Mask(str(path), "probability"), mode, FACE_CONNECTIVITY[mode], (1, 8, 8))
    groups = independent_groups(work.grid, mode)
    assert sorted(b.index for group in groups for b in group) == [b.index for b in work.grid]
    whole = piece_graph(work, "cells", "cells-edges")
    if mode == "3d":
        assert groups == [work.grid]
        with pytest.raises(ValueError, match="outside the blocks gathered"):  # a row along z is not independent
            piece_graph(work, "cells", "cells-edges", [b for b in work.grid if b.position[0] == 0])
        return
    assert [{b.position[0] for b in group} for group in groups] == [{0}, {1}, {2}]  # one row of blocks along z each
    parts = [piece_graph(work, "cells", "cells-edges", group) for group in groups]
    assert sum(len(part.edges) for part in parts) == len(whole.edges) > 0
    assert np.array_equal(np.concatenate([part.sizes for part in parts]), whole.sizes)


def test_blockwise_region_graph_equals_the_whole_volume_graph():
    fragments = ndimage.label(ndimage.gaussian_filter(np.random.default_rng(1).random((5, 37, 41)), 1) > 0.5)[0]
    fragments = np.where(fragments > 0, fragments, 1 + fragments.max())  # fragments cover every voxel
    boundary = quantize(np.random.default_rng(2).random(fragments.shape).astype(np.float16))
    offsets = forward_offsets("3d", 6)
    block, volume = (2, 16, 16), fragments.shape
    grid = block_grid(volume, block)
    ids = global_ids(fragments, block_indices(grid[0].read_box(volume, volume), block, volume))  # cut at blocks
    whole = block_edges(ids, boundary, tuple(slice(0, n) for n in volume), offsets)
    tables = []
    for b in grid:
        read = b.read_box((1, 1, 1), volume)
        tables.append(block_edges(ids[read.slices()], boundary[read.slices()], b.box.relative_to(read), offsets))
    uv, stats = merge_tables(tables)
    assert np.array_equal(uv, whole[0]) and np.array_equal(stats, whole[1])  # counts, sums, minima, maxima exactly
    assert len(uv) > 100


def cells_probability(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A realistic cell probability: the synthetic EM's cells, blurred, with membrane gaps."""
    _, labels = synthetic_volume(shape, seed=seed)
    cell = np.stack([ndimage.binary_erosion(s > 0) for s in labels]).astype(np.float32)
    return ndimage.gaussian_filter(cell, (0, 1.5, 1.5))


@pytest.mark.parametrize("agglomeration,mode", [("mean_threshold", "2d"), ("multicut", "2d"), ("gasp", "2d"),
                                                ("gasp", "3d")])
def test_blockwise_agglomeration_equals_whole_volume_agglomeration(tmp_path, dask_cluster, agglomeration, mode):
    probability = cells_probability((3, 160, 176), 4)
    path = probability_image(tmp_path / "p.ome.zarr", probability, (1, 32, 32), np.float16)
    settings = segment_settings(dask_cluster, agglomeration=agglomeration, mode=mode, context=[3, 64, 64])
    segment(path, tmp_path / "whole.ome.zarr", **settings)  # one block holds the volume
    stats = segment(path, tmp_path / "blocks.ome.zarr", **{**settings, "block": [1, 64, 64]})
    assert stats["blocks"] == 3 * 3 * 3
    whole = ome_zarr.open_image(tmp_path / "whole.ome.zarr")[:]
    blocks = ome_zarr.open_image(tmp_path / "blocks.ome.zarr")[:]
    assert same_partition(whole, blocks)
    assert 20 < stats["segments"] < 200


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_blockwise_watershed_equals_whole_volume_watershed(tmp_path, dask_cluster, mode):
    probability = cells_probability((6, 96, 96), 5)
    path = probability_image(tmp_path / "p.ome.zarr", probability, (1, 16, 16))
    settings = segment_settings(dask_cluster, method="watershed", mode=mode, seed_threshold=0.8, min_size=20,
                                context=[6, 48, 48])
    whole = segment(path, tmp_path / "whole.ome.zarr", **settings)
    blocks = segment(path, tmp_path / "blocks.ome.zarr", **{**settings, "block": [2, 32, 32]})
    assert blocks["blocks"] == 3 * 3 * 3 and whole["segments"] == blocks["segments"] > 5
    flooded = ome_zarr.open_image(tmp_path / "blocks.ome.zarr")[:]
    assert same_partition(ome_zarr.open_image(tmp_path / "whole.ome.zarr")[:], flooded)
    assert np.bincount(flooded.ravel())[1:].min() >= 20 and np.all(probability[flooded > 0] > 0.5)


def test_auto_merge_threshold_is_the_best_candidate_on_the_tune_sections(tmp_path, dask_cluster):
    from conftest import evaluate_settings, write_image

    from unet_pipeline.stages.evaluate import evaluate

    _, labels = synthetic_volume((4, 96, 96), seed=7)
    cell = np.stack([ndimage.binary_erosion(s > 0) for s in labels]).astype(np.float32)
    cell = ndimage.gaussian_filter(cell + 0.3 * np.random.default_rng(0).random(cell.shape), (0, 1.5, 1.5)) / 1.3
    path = probability_image(tmp_path / "p.ome.zarr", cell, (1, 32, 32), np.float16)
    labels_image = write_image(tmp_path / "labels.ome.zarr", labels, (1, 32, 32))
    candidates = [0.2, 0.45, 0.7]
    settings = segment_settings(dask_cluster, block=[1, 64, 64], context=[0, 32, 32], merge_thresholds=candidates)
    auto = segment(path, tmp_path / "auto.ome.zarr", **{**settings, "merge_threshold": "auto",
                                                         "tune_sections": [1, 3], "labels": str(labels_image)})
    errors = []
    for t in candidates:  # the independent way: segment with each threshold, evaluate on the tune sections
        segment(path, tmp_path / f"{t}.ome.zarr", **{**settings, "merge_threshold": t})
        errors.append(evaluate(tmp_path / f"{t}.ome.zarr", path, labels_image, tmp_path / f"{t}.json",
                               **evaluate_settings(dask_cluster, sections=[1, 3], thresholds=[], warping=False)
                               )["model"]["rand_error"])
    assert [point["rand_error"] for point in auto["tuning"]["curve"]] == pytest.approx(errors, abs=1e-12)
    best = candidates[int(np.argmin(errors))]
    assert auto["tuning"]["merge_threshold"] == best and len(set(errors)) > 1
    chosen = ome_zarr.open_image(tmp_path / "auto.ome.zarr")[:]
    assert np.array_equal(chosen, ome_zarr.open_image(tmp_path / f"{best}.ome.zarr")[:])


def test_more_segments_than_uint32_holds_make_a_uint64_output(tmp_path):
    from conftest import COMPRESSION

    from unet_pipeline.stages.segment import _fit_dtype

    image = tmp_path / "s.ome.zarr"
    ome_zarr.create_image(image, (2, 16, 16), np.uint32, (1, 8, 8), COMPRESSION, (50, 4, 4), "nanometer", "s",
                        labels=True)
    _fit_dtype(image, 2**32 - 1)
    assert ome_zarr.open_image(image).dtype == np.uint32
    _fit_dtype(image, 2**32)
    level0 = ome_zarr.open_image(image)
    assert level0.dtype == np.uint64 and level0.chunks == (1, 8, 8) and level0.shape == (2, 16, 16)


@pytest.mark.parametrize("method,merge_thresholds", [("components", [0.5]), ("watershed", [0.5]),
                                                     ("agglomerate", [0.3, 0.5, 0.7])])
def test_in_memory_methods_equal_the_segment_stage(tmp_path, dask_cluster, method, merge_thresholds):
    """Training's validation segments in memory (`segmentation.in_memory`); it must make the stage's cells."""
    probability = cells_probability((2, 96, 112), 6)
    path = probability_image(tmp_path / "p.ome.zarr", probability, (1, 32, 32), np.float16)
    cell = as_probability(ome_zarr.open_image(path)[CELL_CHANNEL])
    keys = {"method": method, "seed_threshold": 0.8, "agglomeration": "gasp"}
    settings = Settings.of(**keys, mode="2d", connectivity=None, threshold=0.5, seed_distance=4,
                           merge_threshold="auto", merge_thresholds=merge_thresholds, tune_sections=[0, 2], min_size=0)
    made = list(segmentations(cell, settings, (50.0, 4.0, 4.0), merge_thresholds))
    assert [threshold for threshold, _ in made] == (merge_thresholds if method == "agglomerate" else [None])
    for threshold, labels in made:
        stage = segment_settings(dask_cluster, **keys, merge_threshold=threshold or 0.5)
        segment(path, tmp_path / f"{threshold}.ome.zarr", **stage)
        assert same_partition(ome_zarr.open_image(tmp_path / f"{threshold}.ome.zarr")[:], labels)
        assert labels.max() > 5


def test_the_neighbour_after_a_block_is_the_next_block_of_the_grid():
    """Made from the block's position alone (the edges phase asks for it per block and axis), it is the block
    the whole grid holds there, clipped at the volume's end; none past the last."""
    work = Work("unused", (5, 70, 90), (2, 32, 32), (0, 8, 8), "key")
    grid = block_grid(work.volume, work.block)
    at = {tuple(block.position): block for block in grid}
    for block in grid:
        for axis in range(3):
            after = list(block.position)
            after[axis] += 1
            assert work.neighbour_after(block, axis) == at.get(tuple(after)), (block, axis)
