"""The segmentation package's array modules on their own, each against an independent reference: labeling
(cc3d) against scipy.ndimage and a brute-force pair scan, the agglomeration solvers against a union-find
written here and against partitions known by construction, stitching against pieces cut from one
labelling, fragments against their seeds, cells streamed in slabs against one labelling."""

import itertools

import numpy as np
import pytest
from conftest import same_partition
from scipy import ndimage

from unet_pipeline.core.errors import ConfigError
from unet_pipeline.segmentation import agglomerate
from unet_pipeline.segmentation.cells import SlabComponents
from unet_pipeline.segmentation.fragments import distance_maxima, watershed_fragments
from unet_pipeline.segmentation.labeling import forward_offsets, label_components, touching_pairs
from unet_pipeline.segmentation.region_graph import mean_boundary, quantize
from unet_pipeline.segmentation.stitching import face_views, stitch_pairs

STRUCTURES = {("2d", 4): (2, 1), ("2d", 8): (2, 2), ("3d", 6): (3, 1), ("3d", 18): (3, 2), ("3d", 26): (3, 3)}


@pytest.mark.parametrize("mode, connectivity", list(STRUCTURES))
def test_label_components_equals_scipy(mode, connectivity):
    mask = np.random.default_rng(connectivity).random((5, 23, 19)) > 0.55
    labels, count = label_components(mask, mode, connectivity)
    rank, reach = STRUCTURES[mode, connectivity]
    structure = ndimage.generate_binary_structure(rank, reach)
    if mode == "2d":
        expected = np.zeros(mask.shape, np.int64)
        total = 0
        for z, section in enumerate(mask):
            section_labels, n = ndimage.label(section, structure)
            expected[z] = np.where(section_labels > 0, section_labels + total, 0)
            total += n
    else:
        expected, total = ndimage.label(mask, structure)
    assert count == total == labels.max() and same_partition(labels, expected)


def test_touching_pairs_equal_a_scan_of_every_neighbouring_pair():
    labels = np.random.default_rng(1).integers(0, 6, (3, 9, 8))
    own = (slice(1, 3), slice(2, 7), slice(1, 6))
    for mode, connectivity in STRUCTURES:
        expected = set()
        for z, y, x in itertools.product(*(range(s.start, s.stop) for s in own)):
            for dz, dy, dx in forward_offsets(mode, connectivity):
                n = (z + dz, y + dy, x + dx)
                if all(0 <= c < s for c, s in zip(n, labels.shape)):
                    a, b = labels[z, y, x], labels[n]
                    if a and b and a != b:
                        expected.add((min(a, b), max(a, b)))
        found = {tuple(pair) for pair in touching_pairs(labels, own, forward_offsets(mode, connectivity))}
        assert found == expected, (mode, connectivity)


def reference_union_find(edges: np.ndarray, nodes: int) -> np.ndarray:
    parent = list(range(nodes))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in edges:
        parent[root(a)] = root(b)
    return np.array([root(i) for i in range(nodes)])


def graph_stats(boundary: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Edge statistics (count, sum, min, max) of edges whose every contact has the value `mean_boundary`."""
    value = quantize(boundary) * 2  # a contact's value: the sum of its two voxels' units
    stats = np.stack([counts, value * counts, value, value], axis=1).astype(np.int64)
    assert np.allclose(mean_boundary(stats), boundary, atol=1e-7)
    return stats


def test_mean_threshold_merges_exactly_the_edges_below_it():
    rng = np.random.default_rng(2)
    nodes = 60
    edges = np.unique(np.sort(rng.integers(0, nodes, (150, 2)), axis=1), axis=0)
    edges = edges[edges[:, 0] != edges[:, 1]]
    boundary = rng.random(len(edges))
    stats = graph_stats(boundary, rng.integers(1, 9, len(edges)))
    for threshold in (0.2, 0.5, 0.8):
        labels = agglomerate.solve("mean_threshold", edges, stats, nodes, threshold)
        expected = reference_union_find(edges[boundary < threshold], nodes)
        assert same_partition(labels + 1, expected + 1), threshold
    assert same_partition(agglomerate.solve("union", edges, stats, nodes, 0) + 1,
                          reference_union_find(edges, nodes) + 1)


@pytest.mark.parametrize("solver", ["mean_threshold", "multicut", "gasp"])
def test_every_solver_finds_two_clusters_joined_by_a_weak_bridge(solver):
    """Two cliques of 5 nodes with low boundaries inside, joined by one edge of high boundary: the partition
    is the two cliques, for every solver."""
    inside = [(a, b) for group in (range(5), range(5, 10)) for a, b in itertools.combinations(group, 2)]
    edges = np.array(sorted(inside + [(4, 5)]))  # sorted and unique, as region graphs are
    boundary = np.where((edges == (4, 5)).all(axis=1), 0.9, 0.1)
    labels = agglomerate.solve(solver, edges, graph_stats(boundary, np.full(len(edges), 10)), 10, 0.5)
    assert same_partition(labels + 1, np.repeat([1, 2], 5))


def test_consecutive_numbers_segments_by_first_node_and_drops_small_ones():
    labels = np.array([7, 3, 7, 9, 3, 9, 5])
    sizes = np.array([4, 1, 4, 1, 1, 1, 2])
    assert agglomerate.consecutive(labels, sizes, 0).tolist() == [1, 2, 1, 3, 2, 3, 4]
    assert agglomerate.consecutive(labels, sizes, 3).tolist() == [1, 0, 1, 0, 0, 0, 0]  # segments of 2, 2, 2 drop


def test_an_unknown_solver_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match=r"segment.agglomeration must be one of \['gasp', 'mean_threshold'"):
        agglomerate.solver("louvain")


def test_stitching_rejoins_exactly_the_fragments_a_face_cut():
    """One labelling of the whole section, cut into two blocks that each renumber their own part: the pairs
    stitched across the face are exactly the fragments that cross it."""
    whole = np.zeros((1, 12, 16), np.uint32)
    whole[0, 2:10, 1:7] = 1   # left block only
    whole[0, 1:5, 5:12] = 2   # crosses the face at x = 8
    whole[0, 6:11, 6:15] = 3  # crosses it too
    whole[0, 8:12, 10:16] = 4  # right block only
    face = 8
    left, right = (slice(0, 1), slice(0, 12), slice(0, face)), (slice(0, 1), slice(0, 12), slice(face, 16))
    # each block sees the whole section as its context and numbers the fragments of its own part: the left
    # one keeps their ids, the right one adds 10; fragments seen only in the context are 0 to it
    left_ids = np.array([0, 1, 2, 3, 0], np.uint32)
    right_ids = np.array([0, 0, 12, 13, 14], np.uint32)
    left_views, right_views = face_views(whole, left, left_ids, "2d"), face_views(whole, right, right_ids, "2d")
    left_layer, right_layer = left_ids[whole[0:1, :, face - 1:face]], right_ids[whole[0:1, :, face:face + 1]]
    pairs = stitch_pairs(left_layer, right_layer, left_views["face_2_1"], right_views["face_2_0"])
    assert sorted(map(tuple, pairs.tolist())) == [(2, 12), (3, 13)]


def test_a_fragment_grows_from_each_seed_and_covers_the_section():
    """Two discs of high cell probability on a low background: one distance maximum each, so two fragments
    that split the section between them, each holding its disc."""
    y, x = np.mgrid[0:40, 0:60]
    discs = [((y - 20) ** 2 + (x - 15) ** 2 < 64), ((y - 20) ** 2 + (x - 45) ** 2 < 64)]
    cell = np.where(discs[0] | discs[1], 0.95, 0.05)[None].astype(np.float32)
    seeds = distance_maxima(cell > 0.5, 4, "2d", (50.0, 4.0, 4.0))
    assert ndimage.label(seeds[0], np.ones((3, 3)))[1] == 2
    fragments = watershed_fragments(cell, 0.5, 4, "2d", (50.0, 4.0, 4.0))
    assert (fragments > 0).all() and len(np.unique(fragments)) == 2
    assert all(len(np.unique(fragments[0][disc])) == 1 for disc in discs)
    assert fragments[0][discs[0]][0] != fragments[0][discs[1]][0]


def test_slab_components_equal_one_labelling_of_the_whole_volume():
    """Cells streamed in slabs of 3 sections get the components of labelling the whole mask at once, whatever
    range of sections is asked for."""
    mask = ndimage.gaussian_filter(np.random.default_rng(4).random((10, 30, 30)), 1.5) > 0.5
    streamed = SlabComponents(lambda first, last: mask[first:last], depth=10, slab=3)
    whole, _ = ndimage.label(mask)
    assert same_partition(streamed.region(0, 10), whole)
    assert same_partition(streamed.region(2, 8), whole[2:8])
    assert np.array_equal(streamed.region(4, 5), streamed.region(0, 10)[4:5])
