"""Segmentation metrics of the ISBI 2012 challenge (numpy in, numbers out).

Foreground-restricted Rand (Arganda-Carreras et al. 2015): with p_ij the joint
distribution of proposal segment i and ground-truth cell j over ground-truth
foreground pixels only,

    V_split = sum p_ij^2 / sum_j t_j^2,   V_merge = sum p_ij^2 / sum_i s_i^2,

V_Rand is their harmonic mean and the Rand error is 1 - V_Rand. Proposal
boundary pixels (label 0) inside the ground-truth foreground count as
singletons. The sums are kept as counts, so they add over sections and chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RandSums:
    """Pair counts: sum n_ij^2, sum s_i^2 (proposal), sum t_j^2 (ground truth)."""

    joint: int = 0
    proposal: int = 0
    truth: int = 0

    def __add__(self, other: "RandSums") -> "RandSums":
        return RandSums(self.joint + other.joint, self.proposal + other.proposal, self.truth + other.truth)


def rand_sums(proposal: np.ndarray, truth: np.ndarray) -> RandSums:
    """Pair counts of a proposal segmentation against ground-truth cells (0 = background)."""
    inside = truth > 0
    seg, gt = proposal[inside].astype(np.int64), truth[inside].astype(np.int64)
    singletons = int(np.count_nonzero(seg == 0))
    in_segment = seg > 0
    _, joint = np.unique(np.stack([seg[in_segment], gt[in_segment]]), axis=1, return_counts=True)
    _, sizes = np.unique(seg[in_segment], return_counts=True)
    _, truth_sizes = np.unique(gt, return_counts=True)
    square = lambda counts: int(np.sum(counts.astype(np.int64) ** 2))  # noqa: E731
    return RandSums(square(joint) + singletons, square(sizes) + singletons, square(truth_sizes))


def rand_scores(sums: RandSums) -> dict[str, float]:
    """V_split, V_merge, V_Rand and the Rand error from pair counts."""
    if sums.truth == 0:
        raise ValueError("the ground truth has no foreground: the foreground-restricted Rand score is undefined")
    split = sums.joint / sums.truth
    merge = sums.joint / sums.proposal if sums.proposal else 0.0
    v_rand = 2 * split * merge / (split + merge) if split + merge else 0.0
    return {"rand_split": split, "rand_merge": merge, "v_rand": v_rand, "rand_error": 1.0 - v_rand}


def threshold_errors(membrane_histogram: np.ndarray, cell_histogram: np.ndarray) -> np.ndarray:
    """Pixel error of 'cell iff intensity >= t' for every t, from per-class intensity histograms."""
    total = membrane_histogram.sum() + cell_histogram.sum()
    cells_below = np.concatenate([[0], np.cumsum(cell_histogram)])
    membrane_at_or_above = membrane_histogram.sum() - np.concatenate([[0], np.cumsum(membrane_histogram)])
    return (cells_below + membrane_at_or_above) / total
