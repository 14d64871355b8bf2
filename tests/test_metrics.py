import functools

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from unet_pipeline.segmentation.metrics import (
    Contingency,
    Sums,
    dice_jaccard,
    info_scores,
    rand_scores,
    sums,
    threshold_errors,
    warping_error,
)


def table(proposal, truth):
    return Contingency().add(np.asarray(proposal), np.asarray(truth))


def test_perfect_segmentation_scores_one():
    truth = np.array([[1, 1, 0, 2, 2], [1, 1, 0, 2, 2]])
    rand, info = rand_scores(table(truth, truth)), info_scores(table(truth, truth))
    assert rand["v_rand"] == 1.0 and rand["rand_error"] == 0.0
    assert info["v_info"] == pytest.approx(1.0) and info["variation_of_information"] == pytest.approx(0.0)


def test_rand_agrees_with_skimage_once_its_dropped_self_pairs_are_accounted_for():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, size=(30, 30))
    proposal = rng.integers(1, 5, size=(30, 30))  # no proposal boundary pixels: no singletons
    ours = table(proposal, truth)
    error, precision, recall = adapted_rand_error(truth, proposal, ignore_labels=(0,))
    # the challenge counts every pixel pair including (x, x); scikit-image drops those n self-pairs
    assert rand_scores(ours)["rand_error"] != pytest.approx(error)
    joint, sizes, truth_sizes, _ = ours.arrays()
    n = int(np.count_nonzero(truth))
    split = (np.sum(joint**2) - n) / (np.sum(truth_sizes**2) - n)
    merge = (np.sum(joint**2) - n) / (np.sum(sizes**2) - n)
    assert 1 - 2 * split * merge / (split + merge) == pytest.approx(error)
    # scikit-image issue 6485: its precision is the challenge's split score, its recall the merge score
    assert split == pytest.approx(precision) and merge == pytest.approx(recall)


def test_variation_of_information_agrees_with_skimage_without_boundary_pixels():
    rng = np.random.default_rng(1)
    truth = rng.integers(1, 5, size=(25, 25))
    proposal = rng.integers(1, 4, size=(25, 25))
    ours = info_scores(table(proposal, truth))
    under, over = variation_of_information(truth, proposal)
    assert ours["variation_of_information"] == pytest.approx((under + over) * np.log(2))  # skimage: bits; ours: nats


def test_proposal_boundary_pixels_are_singletons_not_one_segment():
    truth = np.array([[1, 1, 1, 1, 1, 1]])
    proposal = np.array([[1, 1, 0, 0, 0, 0]])
    ours = rand_scores(table(proposal, truth))
    assert ours["rand_merge"] == 1.0  # singletons never merge
    assert ours["rand_split"] == pytest.approx((4 + 4) / 36)
    # scikit-image treats proposal label 0 as one more segment: a different split score
    _, precision, _ = adapted_rand_error(truth, proposal, ignore_labels=(0,))
    assert precision != pytest.approx(ours["rand_split"])


def test_merge_of_two_cells_lowers_merge_scores_only():
    truth = np.array([[1, 1, 2, 2]])
    merged = np.array([[5, 5, 5, 5]])
    rand, info = rand_scores(table(merged, truth)), info_scores(table(merged, truth))
    assert rand["rand_split"] == 1.0 and rand["rand_merge"] == pytest.approx(0.5)
    assert info["info_split"] == pytest.approx(1.0) and info["info_merge"] == pytest.approx(0.0)


def test_tables_of_pieces_add_up_to_the_whole():
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 6, size=(40, 40))
    proposal = rng.integers(0, 7, size=(40, 40))
    whole = table(proposal, truth)
    pieces = table(proposal[:17], truth[:17]).merge(table(proposal[17:], truth[17:]))
    assert pieces.pairs == whole.pairs and pieces.singletons == whole.singletons
    assert rand_scores(pieces) == rand_scores(whole) and info_scores(pieces) == info_scores(whole)


def test_sums_of_tables_without_shared_ids_pool_to_the_scores_of_their_merged_table():
    rng = np.random.default_rng(3)
    sections = [(rng.integers(0, 5, size=(20, 20)), rng.integers(0, 4, size=(20, 20))) for _ in range(3)]
    tables = [table(np.where(p > 0, p + 10 * z, 0), np.where(t > 0, t + 10 * z, 0))
              for z, (p, t) in enumerate(sections)]  # ids namespaced per section, boundary pixels kept
    merged = Contingency()
    for part in tables:
        merged.merge(part)
    pooled = functools.reduce(Sums.merge, map(sums, tables))
    assert rand_scores(pooled) == rand_scores(merged)
    assert info_scores(pooled) == pytest.approx(info_scores(merged), rel=1e-12)


def test_entropies_count_each_boundary_pixel_as_its_own_segment():
    truth = np.array([[1, 1, 1, 2, 2, 2]])
    proposal = np.array([[3, 3, 0, 4, 0, 0]])  # three boundary pixels: three singletons
    joint = np.array([2, 1, 1, 1, 1]) / 6  # (3, 1), (4, 2) and the singletons
    segments = np.array([2, 1, 1, 1, 1]) / 6
    cells = np.array([3, 3]) / 6
    h_st, h_s, h_t = (float(-np.sum(p * np.log(p))) for p in (joint, segments, cells))
    ours = info_scores(table(proposal, truth))
    assert ours["variation_of_information"] == pytest.approx(2 * h_st - h_s - h_t)
    assert ours["info_merge"] == pytest.approx((h_s + h_t - h_st) / h_t)


def two_cells() -> np.ndarray:
    truth = np.zeros((20, 30), bool)
    truth[3:10, 3:12] = True
    truth[3:10, 15:25] = True
    return truth


def test_warping_error_ignores_topology_preserving_shifts():
    truth = two_cells()
    assert warping_error(np.roll(truth, 1, axis=1), truth)[0] == 0.0
    grown = truth.copy()
    grown[2, 3:12] = True
    assert warping_error(grown, truth)[0] == 0.0


def test_warping_error_counts_merges_and_splits():
    truth = two_cells()
    merged = truth.copy()
    merged[5:7, 12:15] = True
    error, errors = warping_error(merged, truth)
    assert error > 0 and errors[5:7, 12:15].any() and not errors[:, :11].any()
    split = truth.copy()
    split[3:10, 7] = False
    assert warping_error(split, truth)[0] * truth.size == 7


def test_dice_jaccard_and_threshold_errors():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    assert dice_jaccard(a, b) == {"dice": 0.5, "jaccard": pytest.approx(1 / 3)}
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(40, 40))
    cell = rng.random((40, 40)) < 0.7
    errors = threshold_errors(np.bincount(image[~cell], minlength=256), np.bincount(image[cell], minlength=256))
    for t in (0, 17, 128, 256):
        assert errors[t] == pytest.approx(np.mean((image >= t) != cell))


def test_compiled_warping_error_equals_the_vectorised_reference():
    from scipy import ndimage
    from warping_reference import reference_warping_error

    rng = np.random.default_rng(7)
    for seed in range(4):
        field = ndimage.gaussian_filter(rng.random((96, 80)), 2)
        truth = field > np.median(field)
        predicted = ndimage.gaussian_filter(field + 0.05 * rng.random(field.shape), 1) > np.median(field)
        predicted[rng.random(field.shape) < 0.01 * seed] ^= True  # isolated errors too
        error, errors = warping_error(predicted, truth)
        reference, reference_errors = reference_warping_error(predicted, truth)
        assert error == reference and np.array_equal(errors, reference_errors)
        assert 0 < error < np.mean(predicted != truth)


def test_a_table_merged_from_its_blocks_in_any_order_gives_bit_identical_scores():
    """Blocks finish in any order; the scores of a rerun must not move in the last bit (evaluate's outputs are
    byte-identical across runs)."""
    rng = np.random.default_rng(4)
    proposal, truth = rng.integers(0, 10, size=(256, 256)), rng.integers(1, 40, size=(256, 256))
    blocks = [table(proposal[rows] + 100 * block, truth[rows])  # segments numbered per block, as segment's
              for block, rows in enumerate(np.array_split(np.arange(256), 16))]
    in_order = functools.reduce(Contingency.merge, blocks, Contingency())
    for _ in range(10):
        shuffled = functools.reduce(Contingency.merge, [blocks[i] for i in rng.permutation(len(blocks))], Contingency())
        assert list(in_order.pairs) != list(shuffled.pairs)  # the counts come in another order
        assert sums(in_order) == sums(shuffled)
        assert info_scores(in_order) == info_scores(shuffled)
