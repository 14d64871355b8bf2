"""A chunk file that is not on disk is never read as zeros: the stage stops, naming the array and the chunk."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import zarr
from conftest import COMPRESSION, predict_settings, write_image, write_n5
from test_predict import run_predict

from unet_pipeline.core.errors import InputError
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.weights import weights
from unet_pipeline.storage import chunk_files, ome_zarr, outputs

INGEST = dict(chunks=(2, 16, 16), compression=COMPRESSION, voxel_size=(40.0, 4.0, 4.0), unit="nanometer")


def test_every_chunk_is_written_even_one_of_zeros(tmp_path):
    volume = np.zeros((2, 32, 32), np.uint8)
    volume[0, :16, :16] = 7  # one chunk of four holds data; Zarr alone would store only that one
    array = ome_zarr.open_image(write_image(tmp_path / "sparse.ome.zarr", volume, (1, 16, 16)))
    assert chunk_files.missing_keys(array) == [] and len(chunk_files.expected_keys(array)) == 8
    ome_zarr.open_input(tmp_path / "sparse.ome.zarr")  # complete: accepted


def test_predict_refuses_an_input_with_a_deleted_chunk_naming_it(tmp_path, random_checkpoint):
    write_image(tmp_path / "norm.ome.zarr", np.random.default_rng(0).random((2, 64, 64), np.float32), (1, 32, 32))
    (tmp_path / "norm.ome.zarr" / "0" / "1" / "1" / "0").unlink()
    output = tmp_path / "probabilities.ome.zarr"
    settings = predict_settings()
    result = subprocess.run([sys.executable, "-m", "unet_pipeline.cli", "predict", str(tmp_path / "norm.ome.zarr"),
                             str(random_checkpoint()), str(output), "--settings", json.dumps(settings)],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "norm.ome.zarr/0: 1 of 8 chunk files are missing (1/1/0)" in result.stderr
    assert not output.exists() and not outputs.partial_path(output).exists()


def test_weights_refuses_labels_with_a_deleted_chunk(tmp_path):
    labels = np.full((1, 32, 32), 255, np.uint8)
    labels[:, 15:17] = 0
    write_image(tmp_path / "labels.ome.zarr", labels, (1, 16, 16))
    for key in ("0/0/0", "0/1/1"):
        (tmp_path / "labels.ome.zarr" / "0" / key).unlink()
    with pytest.raises(InputError, match=r"labels.ome.zarr/0: 2 of 4 chunk files are missing \(0/0/0, 0/1/1\)"):
        weights(tmp_path / "labels.ome.zarr", tmp_path / "weights.ome.zarr", w0=10, sigma=5, class_balance="none",
                mode="2d", tolerance=1e-3, compression=COMPRESSION)
    assert not (tmp_path / "weights.ome.zarr").exists()


def test_a_deleted_chunk_of_a_finished_output_is_refused_downstream(tmp_path, random_checkpoint):
    """The chain's own outputs are checked too: probabilities with a lost chunk do not reach segment."""
    image = tmp_path / "norm.ome.zarr"
    write_image(image, np.random.default_rng(1).random((1, 64, 64), np.float32), (1, 32, 32))
    run_predict(image, random_checkpoint(), tmp_path / "p.ome.zarr")
    probabilities = ome_zarr.open_image(tmp_path / "p.ome.zarr")
    keys = chunk_files.expected_keys(probabilities)
    (tmp_path / "p.ome.zarr" / "0" / keys[-1]).unlink()
    with pytest.raises(InputError, match=rf"p.ome.zarr/0: 1 of {len(keys)} chunk files are missing \({keys[-1]}\)"):
        ome_zarr.open_input(tmp_path / "p.ome.zarr")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_sparse_zarr_source_is_refused_unless_fill_is_asked_for(tmp_path, zarr_format):
    source = zarr.create_array(str(tmp_path / "sparse.zarr"), shape=(4, 32, 32), chunks=(2, 16, 16), dtype=np.uint8,
                               fill_value=0, zarr_format=zarr_format, config={"write_empty_chunks": False})
    source[:2] = 9  # the first slab of chunks only: the other four were never written
    with pytest.raises(InputError, match=r"sparse.zarr: 4 of 8 chunk files are missing .*volumes.<volume>."
                                         r"missing_chunks: fill"):
        ingest("raw", tmp_path / "sparse.zarr", tmp_path / "raw.ome.zarr", **INGEST)
    assert not (tmp_path / "raw.ome.zarr").exists()
    ingest("raw", tmp_path / "sparse.zarr", tmp_path / "raw.ome.zarr", missing_chunks="fill", **INGEST)
    ingested = ome_zarr.open_input(tmp_path / "raw.ome.zarr")[:]
    assert (ingested[:2] == 9).all() and (ingested[2:] == 0).all()


def test_a_sparse_n5_source_is_refused(tmp_path):
    write_n5(tmp_path / "data.n5" / "raw", np.ones((4, 32, 32), np.uint8), (2, 16, 16), written=slice(0, 2))
    # the chunks of sections 2-3, named as N5 names them (x/y/z)
    message = r"data.n5/raw: 4 of 8 chunk files are missing \(0/0/1, 1/0/1, 0/1/1, \.\.\.\); they would be read as 0"
    with pytest.raises(InputError, match=message.replace("as 0", "as the fill value 0")):
        ingest("raw", tmp_path / "data.n5" / "raw", tmp_path / "raw.ome.zarr", **INGEST)
