import numpy as np
import pytest
from scipy import ndimage

from unet_pipeline.stages.synth import synthetic_volume


def test_deterministic_per_seed_and_different_across_seeds():
    raw_a, labels_a = synthetic_volume((3, 64, 64), seed=5)
    raw_b, labels_b = synthetic_volume((3, 64, 64), seed=5)
    raw_c, _ = synthetic_volume((3, 64, 64), seed=6)
    assert np.array_equal(raw_a, raw_b) and np.array_equal(labels_a, labels_b)
    assert not np.array_equal(raw_a, raw_c)


def test_em_like_content():
    raw, labels = synthetic_volume((4, 128, 128), seed=0)
    assert raw.dtype == np.uint8 and labels.dtype == np.uint32
    membrane = labels == 0
    assert 0.05 < membrane.mean() < 0.35
    assert raw[membrane].mean() + 30 < raw[~membrane].mean()  # dark membranes
    # cells of varying size, each a connected region, continuing across sections
    sizes = np.bincount(labels[0].ravel())[1:]
    sizes = sizes[sizes > 0]
    assert len(sizes) >= 8 and sizes.max() > 2 * np.median(sizes)
    assert len(set(np.unique(labels[0])) & set(np.unique(labels[1]))) > 0.8 * len(np.unique(labels[0]))
    _, components = ndimage.label(labels[0] > 0)
    assert components == len(sizes)


def test_rejects_bad_shape():
    with pytest.raises(ValueError, match="three positive sizes"):
        synthetic_volume((0, 10, 10), seed=0)
