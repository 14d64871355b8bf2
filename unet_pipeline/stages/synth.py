"""A synthetic EM-like volume with ground truth, deterministic per seed.

Cells are a weighted Voronoi partition of seeds that drift smoothly from
section to section; membranes are dark bands a few pixels wide along cell
borders; interiors carry a smooth texture and dark organelle-like blobs (which
a global threshold mistakes for membrane); the image is blurred and noisy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core.errors import ConfigError
from ..core.geometry import Shape


def synthetic_volume(shape: Shape, seed: int, cell_diameter: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """Return (raw uint8, instance labels uint32; 0 = membrane) of shape (z, y, x)."""
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"synthetic shape must be three positive sizes (z, y, x), got {shape}")
    rng = np.random.default_rng(seed)
    labels = _cell_labels(shape, rng, cell_diameter)
    raw = _render(labels, rng, cell_diameter)
    return raw, labels


def _cell_labels(shape: Shape, rng: np.random.Generator, cell_diameter: float) -> np.ndarray:
    depth, height, width = shape
    n_cells = max(2, int(round(height * width / cell_diameter**2 * 1.3)))
    start = rng.uniform(0, 1, size=(n_cells, 2)) * (height, width)
    drift = rng.normal(0, cell_diameter / 25, size=(n_cells, 2))
    weight = rng.uniform(0.7, 1.4, size=n_cells)  # multiplicative Voronoi: varied cell sizes
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    labels = np.empty(shape, dtype=np.uint32)
    for z in range(depth):
        centres = start + z * drift
        dist = np.full((height, width), np.inf, dtype=np.float32)
        nearest = np.zeros((height, width), dtype=np.uint32)
        for cell, ((cy, cx), w) in enumerate(zip(centres, weight), start=1):
            d = np.hypot(yy - cy, xx - cx) / w
            closer = d < dist
            dist[closer] = d[closer]
            nearest[closer] = cell
        border = _borders(nearest)
        labels[z] = np.where(ndimage.binary_dilation(border, iterations=1), 0, nearest)
    return labels


def _borders(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour belongs to another label."""
    border = np.zeros(labels.shape, dtype=bool)
    border[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    border[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return border


def _render(labels: np.ndarray, rng: np.random.Generator, cell_diameter: float) -> np.ndarray:
    shape = labels.shape
    cell_tone = rng.uniform(135, 175, size=int(labels.max()) + 1)
    image = cell_tone[labels].astype(np.float32)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, size=shape).astype(np.float32), sigma=(1, 3, 3))
    image += 40 * texture
    image[labels == 0] = 70.0
    image = _add_blobs(image, labels, rng, cell_diameter)
    image = ndimage.gaussian_filter(image, sigma=(0, 1.0, 1.0))
    image += rng.normal(0, 25, size=shape).astype(np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _add_blobs(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, cell_diameter: float) -> np.ndarray:
    """Dark round organelles inside cells: spheres drawn through the sections they cross."""
    depth, height, width = labels.shape
    n_blobs = max(1, int(height * width / cell_diameter**2 * 0.8))
    centres = rng.uniform(0, 1, size=(n_blobs, 3)) * (depth, height, width)
    radii = rng.uniform(0.1, 0.2, size=n_blobs) * cell_diameter
    yy, xx = np.mgrid[0:height, 0:width]
    for (cz, cy, cx), r in zip(centres, radii):
        for z in range(depth):
            dz = (z - cz) * r / 2  # blobs span a few sections
            r2 = r * r - dz * dz
            if r2 <= 0:
                continue
            inside = ((yy - cy) ** 2 + (xx - cx) ** 2 < r2) & (labels[z] > 0)
            image[z][inside] = 80.0
    return image
