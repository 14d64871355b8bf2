"""The naive weight-map border term, kept as the reference: one distance transform per cell over the whole image."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def naive_border_term(cells: np.ndarray, w0: float, sigma: float, spacing=None) -> np.ndarray:
    term = np.zeros(cells.shape, dtype=np.float32)
    ids = [i for i in np.unique(cells) if i > 0]
    if len(ids) < 2:
        return term
    distances = np.sort(np.stack([ndimage.distance_transform_edt(cells != i, sampling=spacing) for i in ids]), axis=0)
    background = cells == 0
    total = distances[0][background] + distances[1][background]
    term[background] = w0 * np.exp(-(total**2) / (2 * sigma**2))
    return term
