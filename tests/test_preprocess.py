import numpy as np
import pytest
from conftest import COMPRESSION, write_image

from unet_pipeline.core.intensity import FLOAT_BINS, histogram_percentiles
from unet_pipeline.distributed import records
from unet_pipeline.stages.preprocess import preprocess
from unet_pipeline.storage import ome_zarr


@pytest.fixture(params=[4096, 1], ids=["one graph", "a graph per wave"])
def histogram_waves(request, monkeypatch):
    """The histogram in one graph, or summed over one graph per wave of slabs (as on a large volume)."""
    monkeypatch.setattr(records, "GRAPH_CHUNKS", request.param)
    monkeypatch.setattr(records, "UNITS_PER_CPU", 0)  # with 1 chunk per graph: waves of one slab


def test_percentiles_are_whole_volume_and_chunking_independent(tmp_path, histogram_waves):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(4, 30, 40)).astype(np.uint8)
    raw[3] = 255  # one bright section changes the whole-volume statistics
    outputs = []
    for chunks in ((1, 30, 40), (2, 7, 9)):
        source = write_image(tmp_path / f"raw{chunks[1]}.ome.zarr", raw, chunks)
        out = tmp_path / f"norm{chunks[1]}.ome.zarr"
        preprocess(source, out, low_percentile=1.0, high_percentile=99.0, compression=COMPRESSION)
        outputs.append(ome_zarr.open_image(out)[:])
        low, high = ome_zarr.image_attrs(out)["provenance"]["intensity_range"]
        assert (low, high) == tuple(float(v) for v in np.percentile(raw, [1, 99], method="inverted_cdf"))
    assert np.array_equal(outputs[0], outputs[1])
    assert outputs[0].dtype == np.float32 and outputs[0].min() == 0.0 and outputs[0].max() == 1.0


def test_histogram_percentiles_of_a_known_histogram():
    histogram = np.array([10, 0, 80, 10])
    assert histogram_percentiles(histogram, np.arange(4.0), (5, 50)) == (0.0, 2.0)


def test_float_raw_percentiles_are_within_one_bin(tmp_path, histogram_waves):
    raw = np.random.default_rng(1).normal(100.0, 20.0, size=(3, 40, 40)).astype(np.float32)
    source = write_image(tmp_path / "raw.ome.zarr", raw, (1, 20, 20))
    preprocess(source, tmp_path / "norm.ome.zarr", low_percentile=1.0, high_percentile=99.0, compression=COMPRESSION)
    low, high = ome_zarr.image_attrs(tmp_path / "norm.ome.zarr")["provenance"]["intensity_range"]
    width = (raw.max() - raw.min()) / FLOAT_BINS
    expected = np.percentile(raw, [1, 99], method="inverted_cdf")
    assert abs(low - expected[0]) <= width and abs(high - expected[1]) <= width
