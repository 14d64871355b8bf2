"""The storage package's modules on their own: OME-Zarr images (metadata read back with ome-zarr-py, the
independent reader; the chunk check of `open_input`), chunk hashes against hashlib over each chunk's values,
manifests that catch a changed chunk, and the default compression that the schema documents."""

import hashlib
import shutil

import numpy as np
import pytest
import yaml
import zarr
from conftest import COMPRESSION, REPO
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from unet_pipeline import cli
from unet_pipeline.core.errors import InputError
from unet_pipeline.storage import chunk_hashes, ome_zarr


def test_an_image_reads_back_with_its_axes_units_scale_and_label_flag(tmp_path):
    path = tmp_path / "seg.ome.zarr"
    array = ome_zarr.create_image(path, (3, 40, 50), np.uint32, (1, 16, 16), COMPRESSION, (50.0, 4.0, 4.0),
                                  "nanometer", "segmentation", labels=True)
    array[:] = np.arange(3 * 40 * 50, dtype=np.uint32).reshape(3, 40, 50)
    node = next(iter(Reader(parse_url(str(path)))()))
    assert [axis["name"] for axis in node.metadata["axes"]] == ["z", "y", "x"]
    assert {axis["unit"] for axis in node.metadata["axes"]} == {"nanometer"}
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == [50.0, 4.0, 4.0]
    assert np.array_equal(np.asarray(node.data[0]), array[:])
    assert ome_zarr.voxel_size(path) == ([50.0, 4.0, 4.0], "nanometer")
    assert "image-label" in ome_zarr.image_attrs(path)
    assert ome_zarr.layout(path) == {"chunks": (1, 16, 16), "shards": None, "ngff": "0.4", "pyramid": True}


def test_open_input_refuses_a_missing_chunk_and_checks_only_the_sections_asked_for(tmp_path):
    path = tmp_path / "raw.ome.zarr"
    ome_zarr.create_image(path, (4, 32, 32), np.uint8, (1, 16, 16), COMPRESSION, (50.0, 4.0, 4.0), "nanometer",
                          "raw")[:] = 7
    (path / "0" / "2" / "1" / "0").unlink()  # section 2, second row of chunks
    with pytest.raises(InputError, match=r"1 of 16 chunk files are missing \(2/1/0\)"):
        ome_zarr.open_input(path)
    with pytest.raises(InputError, match=r"1 of 4 chunk files are missing \(2/1/0\)"):
        ome_zarr.open_input(path, sections=[0, 2])
    reads = ome_zarr.open_input(path, sections=[0, 3])  # the chunks of those sections are all there
    assert (np.asarray(reads[3]) == 7).all()


def test_chunk_hashes_are_blake2b_over_each_chunks_values(tmp_path):
    volume = np.random.default_rng(0).integers(0, 255, (3, 20, 30), dtype=np.uint8)
    hashes = chunk_hashes.chunk_hashes(volume, (0, 0, 0), (2, 16, 16))
    assert sorted(hashes) == sorted(f"{z}/{y}/{x}" for z in range(2) for y in range(2) for x in range(2))
    block = np.ascontiguousarray(volume[2:3, 16:20, 16:30])
    digest = hashlib.blake2b(f"{block.dtype.str}{block.shape}".encode(), digest_size=16)
    digest.update(block.tobytes())
    assert hashes["1/1/1"] == digest.hexdigest()
    shifted = chunk_hashes.chunk_hashes(volume[:, 16:], (0, 16, 0), (2, 16, 16))  # a block that starts inside
    assert shifted["0/1/0"] == hashes["0/1/0"] and set(shifted) < set(hashes)
    assert chunk_hashes.fingerprint(dict(reversed(list(hashes.items())))) == chunk_hashes.fingerprint(hashes)


def test_a_manifest_names_a_chunk_that_changed_after_it_was_written(tmp_path):
    path = tmp_path / "w.ome.zarr"
    volume = np.random.default_rng(1).random((2, 32, 32)).astype(np.float32)
    array = ome_zarr.create_image(path, volume.shape, np.float32, (1, 16, 16), COMPRESSION, (50.0, 4.0, 4.0),
                                  "nanometer", "w")
    array[:] = volume
    digest = chunk_hashes.write_manifest(path, chunk_hashes.chunk_hashes(volume, (0, 0, 0), array.chunks), array)
    ome_zarr.set_attrs(path, provenance={"content_sha256": digest})  # as every writer does
    report = chunk_hashes.check_manifest(path, array)
    assert report["fingerprint"] == digest and report["chunks"] == 8 and report["intact"]
    assert not (report["missing"] or report["damaged"] or report["changed"] or report["metadata_changed"])
    zarr.open_array(str(path / "0"), mode="r+")[1, 20, 3] = -1.0
    (path / "0" / "0" / "0" / "1").write_bytes(b"not a chunk")
    report = chunk_hashes.check_manifest(path, ome_zarr.open_image(path))
    assert report["changed"] == ["0/1/1/0"] and report["damaged"] == ["0/0/0/1"] and not report["intact"]
    shutil.rmtree(path / "0" / "1")
    assert chunk_hashes.check_manifest(path, ome_zarr.open_image(path))["missing"] == ["0/1/0/0", "0/1/0/1",
                                                                                       "0/1/1/0", "0/1/1/1"]


def test_the_default_compression_is_the_schemas_and_synth_takes_the_configs(tmp_path):
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    fields = schema["properties"]["storage"]["properties"]["compression"]["properties"]
    assert ome_zarr.DEFAULT_COMPRESSION == {key: field["default"] for key, field in fields.items()}
    assert cli.main(["synth", str(tmp_path), "--shape", "2,32,32", "--chunks", "1,32,32",
                     "--compression", '{"codec": "zstd", "level": 3}']) == 0
    compressor = zarr.open_array(str(tmp_path / "raw.ome.zarr" / "0"), mode="r").compressors[0]
    assert type(compressor).__name__ == "Zstd" and compressor.level == 3
