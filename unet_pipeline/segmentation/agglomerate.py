"""Global agglomeration of a fragment graph: which fragments form one segment (numpy in, numpy out).

Solvers take the graph with dense node ids 0..n-1 (edges (E, 2) and their
statistics, see `region_graph`) and return a segment label per node. The
graph algorithms come from maintained libraries: connected components from
scipy, multicut and GASP from bioimage-cpp (the C++ successor of nifty's
solvers, installed from a wheel).

Args of every solver:
    edges: (E, 2) int64 node ids.
    stats: (E, 4) int64 edge statistics (count, sum, min, max; see `region_graph`).
    nodes: number of nodes.
    threshold: the boundary probability that separates merge from keep apart
        (ignored by `union`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..core.errors import ConfigError
from .region_graph import COUNT, mean_boundary

Solver = Callable[[np.ndarray, np.ndarray, int, float], np.ndarray]
EPSILON = 1e-4  # keeps the multicut's log-odds finite


def union(edges: np.ndarray, stats: np.ndarray, nodes: int, threshold: float) -> np.ndarray:
    """Merge across every edge: the connected components of the graph."""
    return _components(edges, nodes)


def mean_threshold(edges: np.ndarray, stats: np.ndarray, nodes: int, threshold: float) -> np.ndarray:
    """Merge across every edge whose mean boundary probability is below `threshold`: the connected components
    of the graph of those edges alone."""
    return _components(edges[mean_boundary(stats) < threshold], nodes)


def multicut(edges: np.ndarray, stats: np.ndarray, nodes: int, threshold: float) -> np.ndarray:
    """Multicut (greedy additive edge contraction, refined by Kernighan-Lin) of log-odds costs: an edge
    attracts when its mean boundary probability is below `threshold`, weighted by its contact count."""
    from bioimage_cpp.graph import UndirectedGraph
    from bioimage_cpp.graph.multicut import KernighanLinMulticut, MulticutObjective

    if len(edges) == 0:
        return np.arange(nodes)
    p = np.clip(mean_boundary(stats), EPSILON, 1 - EPSILON)
    bias = np.clip(threshold, EPSILON, 1 - EPSILON)
    costs = (np.log((1 - p) / p) - np.log((1 - bias) / bias)) * stats[:, COUNT] / stats[:, COUNT].max()
    graph = UndirectedGraph.from_unique_edges(nodes, edges.astype(np.uint64))
    return np.asarray(KernighanLinMulticut().optimize(MulticutObjective(graph, costs)), dtype=np.int64)


def gasp(edges: np.ndarray, stats: np.ndarray, nodes: int, threshold: float) -> np.ndarray:
    """GASP with average linkage (Bailoni et al. 2022): signed weights threshold - mean boundary,
    averaged over contacts as clusters merge."""
    from bioimage_cpp.graph import UndirectedGraph
    from bioimage_cpp.graph.agglomeration import GaspClusterPolicy

    if len(edges) == 0:
        return np.arange(nodes)
    graph = UndirectedGraph.from_unique_edges(nodes, edges.astype(np.uint64))
    weights = threshold - mean_boundary(stats)
    labels = GaspClusterPolicy(linkage="mean").optimize(graph, weights,
                                                        edge_sizes=stats[:, COUNT].astype(np.float64))
    return np.asarray(labels, dtype=np.int64)


SOLVERS: dict[str, Solver] = {"union": union, "mean_threshold": mean_threshold, "multicut": multicut, "gasp": gasp}


def solve(name: str, edges: np.ndarray, stats: np.ndarray, nodes: int, threshold: float) -> np.ndarray:
    """The segment of each node under the solver `name` (one of SOLVERS)."""
    return solver(name)(np.asarray(edges, dtype=np.int64).reshape(-1, 2), stats, nodes, threshold)


def solver(name: str) -> Solver:
    """The solver named `name` (`segment.agglomeration`), or a ConfigError naming the choices."""
    if name not in SOLVERS:
        raise ConfigError(f"segment.agglomeration must be one of {sorted(SOLVERS)}, got {name!r}")
    return SOLVERS[name]


def _components(edges: np.ndarray, nodes: int) -> np.ndarray:
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(nodes, nodes))
    return connected_components(graph, directed=False)[1]


def consecutive(labels: np.ndarray, sizes: np.ndarray, min_size: int) -> np.ndarray:
    """Segment ids 1..N per node, numbered in the order of each segment's first node; nodes of segments
    smaller than `min_size` voxels (summed over their nodes) get 0."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return np.zeros(0, np.int64)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    order = np.argsort(first, kind="stable")
    total = np.bincount(inverse, weights=sizes, minlength=len(first))
    kept = total[order] >= max(min_size, 1)
    rank[order] = np.where(kept, np.cumsum(kept), 0)
    return rank[inverse.ravel()]
