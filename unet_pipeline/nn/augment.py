"""Data augmentation applied identically to image, labels and weights (numpy in, numpy out).

Arrays are (z, y, x) blocks; a 2D model's tiles have z = 1. Every function
takes its randomness from the generator it is given, so a seed fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class AugmentSettings:
    """What `augment_tile` does; see config/README.md (`train.augment`)."""

    elastic_probability: float = 0.5
    elastic_grid: int = 3
    elastic_sigma: float = 10.0
    flips: bool = True
    contrast: float = 0.1
    brightness: float = 0.1
    gamma: float = 0.2
    noise: float = 0.02
    misalign_probability: float = 0.0
    misalign_max_shift: int = 0
    missing_probability: float = 0.0
    elastic_on: Literal["loader", "device"] = "loader"  # where the deformation is computed (see `device_augment`)


def random_dihedral(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """One of the 8 flips/rotations of the last two axes, the same for every array."""
    flip_y, flip_x, transpose = rng.integers(0, 2, size=3)
    out = []
    for array in arrays:
        if flip_y:
            array = array[..., ::-1, :]
        if flip_x:
            array = array[..., ::-1]
        if transpose:
            array = np.swapaxes(array, -1, -2)
        out.append(np.ascontiguousarray(array))
    return out


def elastic_field(shape: tuple[int, int], grid: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Per-pixel displacements (2, y, x): Gaussian vectors (std `sigma` px) on a coarse `grid` x `grid`
    lattice, interpolated smoothly (cubic spline) to every pixel, as in the U-Net paper."""
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid))
    return np.stack([ndimage.zoom(c, (shape[0] / grid, shape[1] / grid), order=3, mode="nearest", grid_mode=True)
                     for c in coarse])


def warp(block: np.ndarray, field: np.ndarray, order: int) -> np.ndarray:
    """Resample each (y, x) section of a (z, y, x) block at position + displacement (mirrored outside)."""
    grid = np.indices(block.shape[1:], dtype=np.float64)
    coordinates = grid + field
    return np.stack([ndimage.map_coordinates(section, coordinates, order=order, mode="mirror") for section in block])


def intensity(image: np.ndarray, settings: AugmentSettings, rng: np.random.Generator) -> np.ndarray:
    """Contrast, brightness, gamma and Gaussian noise on an image normalised to [0, 1]."""
    image = (image - 0.5) * (1 + rng.uniform(-settings.contrast, settings.contrast)) + 0.5
    image = image + rng.uniform(-settings.brightness, settings.brightness)
    image = np.clip(image, 0, 1) ** np.exp(rng.uniform(-settings.gamma, settings.gamma))
    return (image + rng.normal(0, settings.noise, size=image.shape)).astype(np.float32)


def misalign(arrays: list[np.ndarray], max_shift: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shift every section from a random one on by a random (y, x) offset: a simulated alignment error."""
    depth = arrays[0].shape[0]
    if depth < 2 or max_shift < 1:
        return arrays
    start = int(rng.integers(1, depth))
    shift = rng.integers(-max_shift, max_shift + 1, size=2)
    out = []
    for array in arrays:
        array = array.copy()
        array[start:] = np.roll(array[start:], tuple(shift), axis=(1, 2))
        out.append(array)
    return out


def augment_tile(image: np.ndarray, labels: np.ndarray, weights: np.ndarray, settings: AugmentSettings,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment one input-sized (z, y, x) tile of image, labels and weights alike.

    Labels are resampled with nearest neighbours, so they stay integral; the
    image and weights linearly. Intensity changes and missing sections touch
    the image only.
    """
    field = draw_elastic_field(image.shape[1:], settings, rng)
    if field is not None:
        image, labels, weights = warp(image, field, 1), warp(labels, field, 0), warp(weights, field, 1)
    return augment_rest(image, labels, weights, settings, rng)


def augment_unwarped(image: np.ndarray, labels: np.ndarray, weights: np.ndarray, settings: AugmentSettings,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`augment_tile` but for the elastic deformation, which is returned as a (2, y, x) field (zero when
    the tile is not deformed) for the device to apply after the rest (see `device_augment`)."""
    field = draw_elastic_field(image.shape[1:], settings, rng)
    image, labels, weights = augment_rest(image, labels, weights, settings, rng)
    return image, labels, weights, np.zeros((2, *image.shape[1:])) if field is None else field


def draw_elastic_field(shape: tuple[int, int], settings: AugmentSettings,
                       rng: np.random.Generator) -> np.ndarray | None:
    """The tile's elastic deformation field, or None when this tile is not deformed."""
    if rng.random() < settings.elastic_probability:
        return elastic_field(shape, settings.elastic_grid, settings.elastic_sigma, rng)
    return None


def augment_rest(image: np.ndarray, labels: np.ndarray, weights: np.ndarray, settings: AugmentSettings,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Everything of `augment_tile` after the elastic deformation."""
    if settings.flips:
        image, labels, weights = random_dihedral([image, labels, weights], rng)
    if rng.random() < settings.misalign_probability:
        image, labels, weights = misalign([image, labels, weights], settings.misalign_max_shift, rng)
    image = intensity(image, settings, rng)
    if image.shape[0] > 1 and rng.random() < settings.missing_probability:
        image[int(rng.integers(image.shape[0]))] = 0.0  # a lost section
    return image, labels, weights
