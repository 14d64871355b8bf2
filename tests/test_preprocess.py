"""Preprocess writes intensity statistics (no normalised copy); predict and training normalise on the fly."""

import json

import numpy as np
import pytest
from conftest import write_image

from unet_pipeline.core.errors import InputError
from unet_pipeline.core.intensity import FLOAT_BINS, Normalised, histogram_percentiles, normalise
from unet_pipeline.distributed import records
from unet_pipeline.stages.preprocess import preprocess
from unet_pipeline.storage import intensity_stats


@pytest.fixture(params=[4096, 1], ids=["one graph", "a graph per wave"])
def histogram_waves(request, monkeypatch):
    """The histogram in one graph, or summed over one graph per wave of slabs (as on a large volume)."""
    monkeypatch.setattr(records, "GRAPH_CHUNKS", request.param)
    monkeypatch.setattr(records, "UNITS_PER_CPU", 0)  # with 1 chunk per graph: waves of one slab


def test_percentiles_are_whole_volume_and_chunking_independent(tmp_path, histogram_waves):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(4, 30, 40)).astype(np.uint8)
    raw[3] = 255  # one bright section changes the whole-volume statistics
    expected = tuple(float(v) for v in np.percentile(raw, [1, 99], method="inverted_cdf"))
    for chunks in ((1, 30, 40), (2, 7, 9)):
        source = write_image(tmp_path / f"raw{chunks[1]}.ome.zarr", raw, chunks)
        out = tmp_path / f"intensity{chunks[1]}.json"
        assert preprocess(source, out, low_percentile=1.0, high_percentile=99.0) == dict(zip(("low", "high"),
                                                                                            expected))
        assert intensity_stats.intensity_range(out) == expected
        written = json.loads(out.read_text())
        assert written["provenance"]["input_fingerprints"]["raw"] and written["dtype"] == "uint8"
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("norm*"))  # the statistics alone


@pytest.mark.parametrize("fill", [0, 255])
def test_a_constant_raw_is_refused_naming_the_file_and_the_percentiles(tmp_path, fill):
    raw = np.full((2, 16, 16), fill, np.uint8)
    raw[0, 0, :2] = 128  # two other values: under 0.5% of the voxels
    source = write_image(tmp_path / "blank.ome.zarr", raw, (1, 16, 16))
    with pytest.raises(InputError, match=rf"blank.ome.zarr: its 0.5 and 99.5 intensity percentiles are both {fill}.0: "
                                         "the volume is constant there"):
        preprocess(source, tmp_path / "intensity.json", low_percentile=0.5, high_percentile=99.5)
    assert not (tmp_path / "intensity.json").exists()


def test_histogram_percentiles_of_a_known_histogram():
    histogram = np.array([10, 0, 80, 10])
    assert histogram_percentiles(histogram, np.arange(4.0), (5, 50)) == (0.0, 2.0)


def test_float_raw_percentiles_are_within_one_bin(tmp_path, histogram_waves):
    raw = np.random.default_rng(1).normal(100.0, 20.0, size=(3, 40, 40)).astype(np.float32)
    source = write_image(tmp_path / "raw.ome.zarr", raw, (1, 20, 20))
    preprocess(source, tmp_path / "intensity.json", low_percentile=1.0, high_percentile=99.0)
    low, high = intensity_stats.intensity_range(tmp_path / "intensity.json")
    width = (raw.max() - raw.min()) / FLOAT_BINS
    expected = np.percentile(raw, [1, 99], method="inverted_cdf")
    assert abs(low - expected[0]) <= width and abs(high - expected[1]) <= width


def test_a_normalised_view_reads_exactly_the_normalised_copy():
    raw = np.random.default_rng(2).integers(0, 256, size=(3, 20, 24)).astype(np.uint8)
    view, copy = Normalised(raw, 10.0, 200.0), normalise(raw, 10.0, 200.0)
    assert view.dtype == np.float32 and view.shape == raw.shape
    for key in (np.s_[:], np.s_[1, 3:9, ::2], np.s_[2:, 5]):
        assert np.array_equal(view[key], copy[key])


@pytest.mark.parametrize("text, expected", [
    (None, "no such intensity statistics file"),
    ("{not json", "cannot read it as intensity statistics"),
    ('{"low": 5, "high": 1}', "intensity statistics need numbers 'low' <= 'high'"),
    ('{"low": "a", "high": 1}', "intensity statistics need numbers 'low' <= 'high'"),
])
def test_bad_statistics_files_are_refused_by_name(tmp_path, text, expected):
    path = tmp_path / "intensity.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(InputError, match=f"{path}: {expected}"):
        intensity_stats.intensity_range(path)
