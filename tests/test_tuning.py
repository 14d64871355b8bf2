"""The merge-threshold tuning on its own: its blockwise Rand errors of each candidate equal those of the
same agglomeration computed on the whole volume in memory and scored with the metrics module, and the lowest
wins."""

import numpy as np
import pytest
from conftest import COMPRESSION, probability_image
from scipy import ndimage

from unet_pipeline.distributed import cluster
from unet_pipeline.distributed.blockwise import Runner, Work, piece_graph
from unet_pipeline.distributed.tuning import choose_merge_threshold
from unet_pipeline.segmentation import agglomerate, metrics
from unet_pipeline.segmentation.cells import cell_mask
from unet_pipeline.segmentation.in_memory import agglomerations
from unet_pipeline.segmentation.settings import Settings
from unet_pipeline.stages.segment import FRAGMENTS, edge_block, fragment_block
from unet_pipeline.stages.synth import synthetic_volume
from unet_pipeline.storage import ome_zarr

CANDIDATES = [0.2, 0.4, 0.6, 0.8]
VOXEL = (50.0, 4.0, 4.0)


def test_tuning_scores_each_candidate_as_the_whole_volume_in_memory(tmp_path, dask_cluster):
    raw, labels = synthetic_volume((4, 96, 96), seed=5)
    cell = ndimage.gaussian_filter((labels > 0).astype(np.float32), (0, 1.5, 1.5))
    cell = np.clip(cell + np.random.default_rng(5).normal(0, 0.05, cell.shape), 0, 1).astype(np.float32)
    probabilities = probability_image(tmp_path / "p.ome.zarr", cell, (1, 32, 32))
    labels_path = tmp_path / "labels.ome.zarr"
    ome_zarr.create_image(labels_path, labels.shape, labels.dtype, (1, 32, 32), COMPRESSION, VOXEL, "nanometer",
                          "labels", labels=True)[:] = labels
    settings = Settings.of(method="agglomerate", mode="2d", connectivity=None, threshold=0.5, seed_threshold=0.9,
                           seed_distance=4, agglomeration="mean_threshold", merge_threshold="auto",
                           merge_thresholds=CANDIDATES, tune_sections=[1, 3], min_size=0)
    work = Work(str(tmp_path / "run"), cell.shape, (1, 32, 32), (0, 96, 96), "tune-test")  # context: the section
    with cluster.connect(**dask_cluster) as client:
        runner = Runner(client, work, stall_timeout_s=120)
        work.ensure_scratch(FRAGMENTS, (1, 32, 32))
        runner.phase(FRAGMENTS, fragment_block, probabilities=str(probabilities), settings=settings, voxel_size=VOXEL)
        runner.phase("edges", edge_block, probabilities=str(probabilities), settings=settings)
        graph = piece_graph(work, FRAGMENTS, "edges")

        def solve(threshold: float) -> np.ndarray:
            return agglomerate.solve("mean_threshold", graph.edges, graph.stats, graph.fragments, threshold)

        chosen, curve = choose_merge_threshold(runner, graph, work.grid, solve, CANDIDATES, 0, str(labels_path),
                                               [1, 3], FRAGMENTS, (1, 32, 32))
    truth = np.stack([ndimage.label(cell_mask(section))[0] for section in labels])
    expected = []
    for threshold, segmentation in agglomerations(cell, settings, VOXEL, CANDIDATES):
        table = metrics.Contingency()
        for z in (1, 2):
            table.merge(metrics.section_table(segmentation[z], truth[z], z))
        expected.append(metrics.rand_scores(table)["rand_error"])
    assert [point["merge_threshold"] for point in curve] == CANDIDATES
    assert [point["rand_error"] for point in curve] == pytest.approx(expected, abs=1e-12)
    assert chosen == CANDIDATES[int(np.argmin(expected))] and len(set(expected)) > 1
