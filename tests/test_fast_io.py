"""Reads and writes through tensorstore equal zarr-python's, for every layout the pipeline writes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import zarr
from conftest import COMPRESSION
from hypothesis import given, settings
from hypothesis import strategies as st

from unet_pipeline.core.geometry import Box, grid_indices
from unet_pipeline.storage import ome_zarr, tensorstore_io
from unet_pipeline.storage.chunk_files import CheckedReads, missing_keys

SHAPE = (5, 37, 41)


@pytest.fixture(scope="module", params=["0.4", "0.5", "0.5-sharded"])
def array(request, tmp_path_factory):
    ngff, sharded = request.param.split("-")[0], request.param.endswith("sharded")
    path = tmp_path_factory.mktemp("fast") / "image.ome.zarr"
    values = np.random.default_rng(0).integers(0, 2**16, SHAPE).astype(np.uint16)
    ome_zarr.create_image(path, SHAPE, np.uint16, (1, 8, 8), COMPRESSION, (50, 4, 4), "nanometer", "x", ngff=ngff,
                        shards=(1, 16, 16) if sharded else None)[:] = values
    return ome_zarr.open_checked(path, fast=True), values


regions = st.tuples(*(st.tuples(st.integers(-3, n + 3), st.integers(-3, n + 3)) for n in SHAPE))


@settings(max_examples=60, deadline=None)
@given(regions)
def test_plain_regions_read_as_numpy_and_zarr_python_read_them(array, region):
    checked, values = array
    key = tuple(slice(a, b) for a, b in region)
    assert tensorstore_io.plain_region(key, SHAPE) is not None
    assert np.array_equal(checked[key], values[key])
    assert checked._reader.get() is not None  # the tensorstore path, not the fallback


def test_other_selections_go_to_zarr_python(array):
    checked, values = array
    for key in [(2,), (slice(None), 3), (slice(0, 5, 2),), (Ellipsis, 4)]:
        assert tensorstore_io.plain_region(key, SHAPE) is None
        assert np.array_equal(checked[key], values[key])


def test_arrays_tensorstore_cannot_reach_are_read_by_zarr_python():
    in_memory = zarr.create_array(zarr.storage.MemoryStore(), shape=(4, 4), chunks=(2, 2), dtype="u1")
    in_memory[:] = 7
    assert tensorstore_io.open_handle(in_memory) is None
    assert CheckedReads(in_memory, "memory", fast=True)[1:3, 1:3].tolist() == [[7, 7], [7, 7]]


def test_without_fast_nothing_opens_tensorstore(array, tmp_path):
    """(Readers in processes that fork later, such as training's data loader, must not.)"""
    _, values = array
    path = tmp_path / "plain.ome.zarr"
    ome_zarr.create_image(path, SHAPE, np.uint16, (1, 8, 8), COMPRESSION, (50, 4, 4), "nanometer", "x")[:] = values
    plain = ome_zarr.open_checked(path)
    assert np.array_equal(plain[1:3, 5:30], values[1:3, 5:30]) and plain._reader is None
    travelled = pickle.loads(pickle.dumps(plain))  # as a Dask task's argument: still zarr-python only
    assert np.array_equal(travelled[1:3, 5:30], values[1:3, 5:30]) and travelled._reader is None


def test_a_fast_reader_opens_its_handle_again_where_it_is_unpickled(array):
    checked, values = array
    checked[0:1, 0:8]
    travelled = pickle.loads(pickle.dumps(checked))
    assert travelled._reader._handle is None  # the handle stayed behind
    assert np.array_equal(travelled[1:4, 2:30, 3:9], values[1:4, 2:30, 3:9])
    assert travelled._reader.get() is not None


@pytest.mark.parametrize("ngff, shards", [("0.4", None), ("0.5", None), ("0.5", (1, 16, 16))])
def test_batched_writes_store_what_zarr_python_reads_back_and_every_chunk(tmp_path, ngff, shards):
    """Whole write units, several per call, one of them all fill value: its file is stored too (a missing
    chunk file means a lost one, see `chunk_files`)."""
    shape, unit = (2, 32, 48), shards or (1, 8, 8)
    path = tmp_path / "out.ome.zarr"
    array = ome_zarr.create_image(path, shape, np.float32, (1, 8, 8), COMPRESSION, (50, 4, 4), "nanometer", "x",
                                ngff=ngff, shards=shards)
    values = np.random.default_rng(1).random(shape, dtype=np.float32)
    values[1, :16, :16] = 0
    writer = tensorstore_io.RegionWriter(ome_zarr.open_image(path, mode="r+"))
    regions = [Box.unit(index, unit, shape).slices() for index in grid_indices(shape, unit)]
    writer.write((region, values[region]) for region in regions)
    assert writer._handle is not None  # the tensorstore path, not the fallback
    assert np.array_equal(ome_zarr.open_image(path)[:], values)
    assert missing_keys(array) == []
