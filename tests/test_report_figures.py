"""The report's figures on their own: each panel of a section strip shows what its caption says, pixel by
pixel, and the PNG data URIs decode back to the same pixels."""

import base64
import io

import numpy as np
from PIL import Image

from unet_pipeline.stages.report import png_data_uri, section_panels, weight_panels


def test_section_panels_mark_borders_and_each_kind_of_pixel_error():
    raw = np.tile(np.linspace(0, 255, 20), (10, 1))
    truth = np.zeros((10, 20), np.uint32)
    truth[:, :10], truth[:, 11:] = 1, 2  # two cells, membrane at x = 10
    cell = np.where(truth > 0, 0.9, 0.1)
    cell[2, 3] = 0.2   # called membrane, is cell: blue
    cell[5, 10] = 0.8  # called cell, is membrane: red
    segmentation = truth.copy()
    strip = section_panels(raw, cell, segmentation, truth, 0.5)
    gray, prob, borders, errors = np.split(strip, 4, axis=1)
    assert strip.shape == (10, 80, 3) and (gray[..., 0] == gray[..., 2]).all()
    assert gray[0, 0, 0] == 0 and gray[0, -1, 0] == 255  # the raw's 0.5 / 99.5 percentiles stretched to 0 / 255
    assert prob[0, 0, 0] == int(0.9 * 255) and prob[5, 10, 0] == int(0.8 * 255)
    edge = (borders == (255, 40, 40)).all(axis=-1)
    assert edge[:, 10:12].all() and not edge[:, :10].any() and not edge[:, 12:].any()  # where the id changes
    red, blue = (errors == (255, 60, 60)).all(axis=-1), (errors == (60, 120, 255)).all(axis=-1)
    assert np.argwhere(red).tolist() == [[5, 10]] and np.argwhere(blue).tolist() == [[2, 3]]


def test_weight_panels_scale_the_weights_to_their_maximum():
    raw = np.zeros((4, 6))
    labels = np.array([[0, 1, 1, 0, 2, 2]] * 4)
    weights = np.tile(np.array([10.0, 1, 1, 5, 1, 1]), (4, 1))
    strip = weight_panels(raw, labels, weights)
    cells, heat = strip[:, 6:12, 0], strip[:, 12:, 0]
    assert (cells == np.where(labels > 0, 255, 0)).all()
    assert heat[0].tolist() == [255, 25, 25, 127, 25, 25]


def test_png_data_uris_decode_to_the_same_pixels():
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    uri = png_data_uri(rgb)
    assert uri.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert np.array_equal(decoded, rgb)
