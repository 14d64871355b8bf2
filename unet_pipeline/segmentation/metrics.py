"""Segmentation metrics of the ISBI 2012 challenge (numpy in, numbers out).

Arganda-Carreras et al. (2015), Frontiers in Neuroanatomy 9:142. With p_ij
the joint distribution of proposal segment i and ground-truth cell j over
ground-truth foreground pixels only, s_i and t_j its marginals:

    V_split^Rand = sum p_ij^2 / sum_j t_j^2      V_merge^Rand = sum p_ij^2 / sum_i s_i^2
    V_split^Info = I(S;T) / H(S)                 V_merge^Info = I(S;T) / H(T)

V^Rand and V^Info are the harmonic means of their split and merge parts
(V^Info = 2 I(S;T) / (H(S) + H(T))); the errors are 1 - V. Proposal boundary
pixels (id 0) inside the ground-truth foreground count as singletons, each
its own segment. A `Contingency` holds integer counts only, so tables of
chunks or sections add up exactly.

Warping error (Jain et al. 2010): the binary prediction is warped toward the
ground truth by flipping mismatched *simple* pixels (whose flip changes no
topology) until none is left; the pixels still wrong are the topological
errors, as a fraction of all pixels.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, field

import numba
import numpy as np

from ..core.errors import InputError


@dataclass
class Contingency:
    """Counts n_ij of (proposal id, truth id) over truth-foreground pixels, plus proposal-boundary singletons."""

    pairs: dict[tuple[int, int], int] = field(default_factory=dict)
    singletons: dict[int, int] = field(default_factory=dict)  # truth id -> boundary pixels of the proposal in it

    def add(self, proposal: np.ndarray, truth: np.ndarray) -> "Contingency":
        """Count one block (ids must be globally unique across blocks that are added)."""
        inside = truth > 0
        seg, gt = proposal[inside].astype(np.int64), truth[inside].astype(np.int64)
        boundary = seg == 0
        for key, count in zip(*_counts(np.stack([seg[~boundary], gt[~boundary]]))):
            key = (int(key[0]), int(key[1]))
            self.pairs[key] = self.pairs.get(key, 0) + int(count)
        for key, count in zip(*np.unique(gt[boundary], return_counts=True)):
            self.singletons[int(key)] = self.singletons.get(int(key), 0) + int(count)
        return self

    def merge(self, other: "Contingency") -> "Contingency":
        for key, count in other.pairs.items():
            self.pairs[key] = self.pairs.get(key, 0) + count
        for key, count in other.singletons.items():
            self.singletons[key] = self.singletons.get(key, 0) + count
        return self

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(joint counts, proposal sizes, truth sizes, singletons), singletons excluded from the first two."""
        joint = np.array(list(self.pairs.values()), dtype=np.int64)
        keys = np.array(list(self.pairs.keys()), dtype=np.int64).reshape(-1, 2)
        proposal = np.bincount(np.unique(keys[:, 0], return_inverse=True)[1], weights=joint).astype(np.int64) \
            if len(joint) else np.zeros(0, np.int64)
        truth_ids = np.concatenate([keys[:, 1], np.array(list(self.singletons), dtype=np.int64)])
        truth_counts = np.concatenate([joint, np.array(list(self.singletons.values()), dtype=np.int64)])
        truth = np.bincount(np.unique(truth_ids, return_inverse=True)[1], weights=truth_counts).astype(np.int64) \
            if len(truth_ids) else np.zeros(0, np.int64)
        return joint, proposal, truth, sum(self.singletons.values())


def _counts(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct columns of a (2, N) id array and how often each occurs (three 1D sorts: much faster
    than sorting the columns as pairs)."""
    if pairs.shape[1] == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    first_ids, first = np.unique(pairs[0], return_inverse=True)
    second_ids, second = np.unique(pairs[1], return_inverse=True)
    keys, counts = np.unique(first.astype(np.int64) * len(second_ids) + second, return_counts=True)
    return np.stack([first_ids[keys // len(second_ids)], second_ids[keys % len(second_ids)]], axis=1), counts


@dataclass(frozen=True)
class Sums:
    """What the foreground-restricted scores need of a contingency table: the total, the singletons, and for
    the joint counts and each marginal the sum of squares and of n log n. Tables that share no proposal and no
    truth id (e.g. the section-namespaced tables of different sections) pool by adding their sums, so pooled
    scores need no pooled table."""

    total: int = 0
    singletons: int = 0
    joint_squares: int = 0
    proposal_squares: int = 0
    truth_squares: int = 0
    joint_xlogx: float = 0.0
    proposal_xlogx: float = 0.0
    truth_xlogx: float = 0.0

    def merge(self, other: "Sums") -> "Sums":
        """The sums of both tables, pooled (a new value: `Contingency.merge` adds in place)."""
        return Sums(*(a + b for a, b in zip(astuple(self), astuple(other))))


def _xlogx(counts: np.ndarray) -> float:
    """The sum of n log n over `counts`, the same float whatever their order (the order of a merged table's
    counts is the order its blocks finished in)."""
    counts = np.sort(counts[counts > 1]).astype(np.float64)  # 1 log 1 = 0
    return float(np.sum(counts * np.log(counts)))


def sums(table: Contingency) -> Sums:
    """The sums of a table (see `Sums`)."""
    joint, proposal, truth, singletons = table.arrays()
    return Sums(int(truth.sum()), singletons, int(np.sum(joint**2)), int(np.sum(proposal**2)),
                int(np.sum(truth**2)), _xlogx(joint), _xlogx(proposal), _xlogx(truth))


def rand_scores(table: Contingency | Sums) -> dict[str, float]:
    """V_split, V_merge, V_Rand and the Rand error."""
    s = table if isinstance(table, Sums) else sums(table)
    if s.truth_squares == 0:
        raise InputError("the ground truth has no foreground: the foreground-restricted scores are undefined")
    joint_pairs = s.joint_squares + s.singletons
    split, merge = joint_pairs / s.truth_squares, joint_pairs / (s.proposal_squares + s.singletons)
    v_rand = 2 * split * merge / (split + merge)
    return {"rand_split": split, "rand_merge": merge, "v_rand": v_rand, "rand_error": 1.0 - v_rand}


def _entropy(xlogx: float, total: int) -> float:
    """Entropy (nats) of counts summing to `total` from the sum of n log n over them (singletons add 0)."""
    return max(0.0, float(np.log(total)) - xlogx / total)


def info_scores(table: Contingency | Sums) -> dict[str, float]:
    """V_split^Info, V_merge^Info, V_Info, its error, and the variation of information (nats)."""
    s = table if isinstance(table, Sums) else sums(table)
    if s.total == 0:
        raise InputError("the ground truth has no foreground: the foreground-restricted scores are undefined")
    h_s, h_t, h_st = (_entropy(x, s.total) for x in (s.proposal_xlogx, s.truth_xlogx, s.joint_xlogx))
    mutual = h_s + h_t - h_st
    split = mutual / h_s if h_s > 0 else 1.0
    merge = mutual / h_t if h_t > 0 else 1.0
    v_info = 2 * mutual / (h_s + h_t) if h_s + h_t > 0 else 1.0
    return {"info_split": split, "info_merge": merge, "v_info": v_info, "info_error": 1.0 - v_info,
            "variation_of_information": (h_st - h_t) + (h_st - h_s)}


def dice_jaccard(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice and Jaccard of a class from boolean masks."""
    return overlap_scores(int(np.count_nonzero(predicted)), int(np.count_nonzero(truth)),
                          int(np.count_nonzero(predicted & truth)))


def overlap_scores(predicted: int, true: int, both: int) -> dict[str, float]:
    """Dice and Jaccard of a class from its voxel counts (predicted, true, in both), so that counts of blocks
    add up before scoring; 1 when the class is in neither."""
    either = predicted + true - both
    return {"dice": 2 * both / (predicted + true) if predicted + true else 1.0,
            "jaccard": both / either if either else 1.0}


def threshold_errors(membrane_histogram: np.ndarray, cell_histogram: np.ndarray) -> np.ndarray:
    """Pixel error of 'cell iff intensity >= t' for every t, from per-class intensity histograms."""
    total = membrane_histogram.sum() + cell_histogram.sum()
    cells_below = np.concatenate([[0], np.cumsum(cell_histogram)])
    membrane_at_or_above = membrane_histogram.sum() - np.concatenate([[0], np.cumsum(membrane_histogram)])
    return (cells_below + membrane_at_or_above) / total


def _simple_lut() -> np.ndarray:
    """For each of the 256 (8-neighbourhood) patterns: is the centre a simple point?

    Foreground 8-connected, background 4-connected: the centre is simple when
    its foreground neighbours form exactly one 8-component and its background
    4-neighbours lie in exactly one 4-component of the neighbourhood's background.
    """
    from scipy import ndimage

    lut = np.zeros(256, dtype=bool)
    positions = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]
    for code in range(256):
        patch = np.zeros((3, 3), dtype=bool)
        for bit, (y, x) in enumerate(positions):
            patch[y, x] = bool(code >> bit & 1)
        _, foreground = ndimage.label(patch, structure=np.ones((3, 3)))
        background = ~patch
        background[1, 1] = False
        labels, _ = ndimage.label(background)
        touching = {labels[y, x] for y, x in ((0, 1), (1, 2), (2, 1), (1, 0)) if labels[y, x]}
        lut[code] = foreground == 1 and len(touching) == 1
    return lut


_SIMPLE = _simple_lut()


@numba.njit(cache=True, nogil=True)
def _is_simple(image: np.ndarray, y: int, x: int, lut: np.ndarray) -> bool:
    """Whether pixel (y, x) of a binary image is simple (pixels outside the image count as background)."""
    code = 0
    bit = 0
    for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)):
        ny, nx = y + dy, x + dx
        if 0 <= ny < image.shape[0] and 0 <= nx < image.shape[1] and image[ny, nx]:
            code |= 1 << bit
        bit += 1
    return lut[code]


@numba.njit(cache=True, nogil=True)
def _warp(warped: np.ndarray, truth: np.ndarray, lut: np.ndarray) -> None:
    """Flip mismatched simple pixels of `warped` (in place) until none is left.

    Sweeps the nine phases (y mod 3, x mod 3) in turn, as often as a sweep
    flips anything. Pixels of one phase are 3 apart and never share a
    neighbourhood, so flipping them one by one equals flipping them together.
    Only mismatched pixels can flip, and a flipped pixel matches for good, so
    each sweep visits the mismatched pixels alone.
    """
    ys, xs = np.nonzero(warped != truth)
    phase = (ys % 3) * 3 + xs % 3
    order = np.argsort(phase, kind="mergesort")
    ys, xs, phase = ys[order], xs[order], phase[order]
    alive = np.ones(len(ys), dtype=np.bool_)
    changed = True
    while changed:
        changed = False
        for i in range(len(ys)):  # phase order: every pixel of phase k before any of phase k + 1
            if alive[i] and _is_simple(warped, ys[i], xs[i], lut):
                warped[ys[i], xs[i]] = truth[ys[i], xs[i]]
                alive[i] = False
                changed = True


def warping_error(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray]:
    """Warping error of a binary 2D prediction against binary truth, and the map of topological errors
    (a compiled kernel: about a microsecond per mismatched pixel and sweep)."""
    warped = np.ascontiguousarray(predicted, dtype=np.bool_).copy()
    truth = np.ascontiguousarray(truth, dtype=np.bool_)
    _warp(warped, truth, _SIMPLE)
    errors = warped != truth
    return float(np.count_nonzero(errors)) / errors.size, errors


def namespaced(ids: np.ndarray, section: int) -> np.ndarray:
    """Ids made unique per section (0 stays 0), for pooling 2D sections."""
    return np.where(ids > 0, ids.astype(np.int64) + (section << 32), 0)


def section_table(proposal: np.ndarray, truth_cells: np.ndarray, section: int) -> Contingency:
    """The contingency table of one 2D section, its ids made unique to the section (so sections pool)."""
    return Contingency().add(namespaced(proposal, section), namespaced(truth_cells, section))
