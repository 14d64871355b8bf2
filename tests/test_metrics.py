import numpy as np
import pytest
from skimage.metrics import adapted_rand_error

from unet_pipeline.metrics import RandSums, rand_scores, rand_sums, threshold_errors


def test_perfect_segmentation_scores_one():
    truth = np.array([[1, 1, 0, 2, 2], [1, 1, 0, 2, 2]])
    scores = rand_scores(rand_sums(truth, truth))
    assert scores["v_rand"] == 1.0 and scores["rand_error"] == 0.0


def test_agrees_with_skimage_once_its_dropped_self_pairs_are_accounted_for():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, size=(30, 30))
    proposal = rng.integers(1, 5, size=(30, 30))  # no proposal boundary pixels: no singletons
    sums = rand_sums(proposal, truth)
    error, precision, recall = adapted_rand_error(truth, proposal, ignore_labels=(0,))
    # the challenge counts every pixel pair including (x, x); scikit-image drops those n self-pairs
    assert rand_scores(sums)["rand_error"] != pytest.approx(error)
    n = int(np.count_nonzero(truth))
    scores = rand_scores(RandSums(sums.joint - n, sums.proposal - n, sums.truth - n))
    assert scores["rand_error"] == pytest.approx(error)
    # scikit-image issue 6485: its precision is the challenge's split score, its recall the merge score
    assert scores["rand_split"] == pytest.approx(precision)
    assert scores["rand_merge"] == pytest.approx(recall)


def test_proposal_boundary_pixels_count_as_singletons():
    truth = np.array([[1, 1, 1, 1]])
    proposal = np.array([[1, 1, 0, 0]])
    sums = rand_sums(proposal, truth)
    assert sums == RandSums(joint=4 + 2, proposal=4 + 2, truth=16)
    assert rand_scores(sums)["rand_merge"] == 1.0


def test_merge_of_two_cells_lowers_merge_score_only():
    truth = np.array([[1, 1, 2, 2]])
    merged = np.array([[5, 5, 5, 5]])
    scores = rand_scores(rand_sums(merged, truth))
    assert scores["rand_split"] == 1.0 and scores["rand_merge"] == pytest.approx(0.5)


def test_threshold_errors_match_direct_count():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(40, 40))
    cell = rng.random((40, 40)) < 0.7
    errors = threshold_errors(np.bincount(image[~cell], minlength=256), np.bincount(image[cell], minlength=256))
    for t in (0, 17, 128, 256):
        assert errors[t] == pytest.approx(np.mean((image >= t) != cell))
