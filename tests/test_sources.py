"""Every kind of source a user brings ingests exactly: section folders, HDF5, Zarr v2/v3, N5."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from conftest import COMPRESSION, write_n5
from PIL import Image

from unet_pipeline.core.errors import InputError
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.storage import ome_zarr
from unet_pipeline.storage.sources import natural_key, open_source, source_file, source_voxel_size

VOLUME = np.random.default_rng(0).integers(0, 256, size=(11, 24, 20)).astype(np.uint8)


def ingested(source, tmp_path, kind="raw") -> np.ndarray:
    out = tmp_path / f"{kind}.ome.zarr"
    ingest(kind, source, out, chunks=(2, 16, 16), compression=COMPRESSION, voxel_size=(40.0, 4.0, 4.0),
           unit="nanometer")
    return ome_zarr.open_image(out)[:]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_folder_of_sections_is_read_in_natural_order(tmp_path, suffix):
    folder = tmp_path / "sections"
    folder.mkdir()
    for z, section in enumerate(VOLUME):  # section_1, section_2, ..., section_10: natural, not lexical, order
        path = folder / f"section_{z + 1}{suffix}"
        Image.fromarray(section).save(path) if suffix == ".png" else tifffile.imwrite(path, section)
    (folder / "notes.txt").write_text("ignored")
    assert np.array_equal(ingested(folder, tmp_path), VOLUME)


def test_natural_key_orders_numbers_by_value():
    assert sorted(["z10.png", "z2.png", "z1.png"], key=natural_key) == ["z1.png", "z2.png", "z10.png"]


def test_a_section_of_another_shape_is_named(tmp_path):
    folder = tmp_path / "sections"
    folder.mkdir()
    for z in range(3):
        Image.fromarray(VOLUME[z] if z != 2 else VOLUME[z, :10]).save(folder / f"{z}.png")
    with pytest.raises(InputError, match=r"2.png: section 2 is \(10, 20\) uint8; the stack's first section is"):
        ingested(folder, tmp_path)
    assert not (tmp_path / "raw.ome.zarr").exists()


def test_hdf5_dataset_by_inner_path_or_as_the_only_dataset(tmp_path):
    with h5py.File(tmp_path / "volume.h5", "w") as handle:
        handle.create_dataset("em/raw", data=VOLUME, chunks=(1, 24, 20))
        handle.create_dataset("em/labels", data=VOLUME.astype(np.int64) // 50)
    spec = tmp_path / "volume.h5" / "em" / "raw"
    assert source_file(spec) == tmp_path / "volume.h5"
    assert np.array_equal(ingested(spec, tmp_path), VOLUME)
    with pytest.raises(InputError, match=r"volume.h5: name the dataset as .*volume.h5/<dataset>"):
        open_source(tmp_path / "volume.h5")
    with pytest.raises(InputError, match="volume.h5: no dataset 'em/other'"):
        open_source(tmp_path / "volume.h5" / "em" / "other")
    with h5py.File(tmp_path / "only.h5", "w") as handle:
        handle["data"] = VOLUME
        handle["data"].attrs["element_size_um"] = [0.04, 0.004, 0.004]
    assert np.array_equal(open_source(tmp_path / "only.h5")[:], VOLUME)
    assert source_voxel_size(tmp_path / "only.h5") == ([0.04, 0.004, 0.004], "micrometer")  # the same dataset


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_arrays_of_either_format(tmp_path, zarr_format):
    group = zarr.open_group(str(tmp_path / "data.zarr"), mode="w", zarr_format=zarr_format)
    group.create_array("volumes/raw", data=VOLUME, chunks=(3, 8, 8))
    assert np.array_equal(ingested(tmp_path / "data.zarr" / "volumes" / "raw", tmp_path), VOLUME)


def test_n5_dataset(tmp_path):
    write_n5(tmp_path / "data.n5" / "raw", VOLUME, (2, 8, 8))
    assert json.loads((tmp_path / "data.n5" / "raw" / "attributes.json").read_text())["dimensions"] == list(
        VOLUME.shape[::-1])  # as Fiji writes it: x, y, z
    assert source_file(tmp_path / "data.n5" / "raw") == tmp_path / "data.n5"
    assert np.array_equal(ingested(tmp_path / "data.n5" / "raw", tmp_path), VOLUME)
    attributes = tmp_path / "data.n5" / "raw" / "attributes.json"
    attributes.write_text(json.dumps({**json.loads(attributes.read_text()),
                                      "pixelResolution": {"dimensions": [4.0, 5.0, 40.0], "unit": "nm"}}))
    assert source_voxel_size(tmp_path / "data.n5" / "raw") == ([40.0, 5.0, 4.0], "nanometer")  # N5 lists x, y, z


def test_voxel_size_comes_from_the_source_metadata_when_the_config_leaves_it_out(tmp_path):
    tifffile.imwrite(tmp_path / "calibrated.tif", VOLUME[:, None], imagej=True, resolution=(1 / 0.004, 1 / 0.005),
                     metadata={"spacing": 0.05, "unit": "um", "axes": "ZCYX"})
    assert source_voxel_size(tmp_path / "calibrated.tif") == ([0.05, 0.005, 0.004], "micrometer")
    with h5py.File(tmp_path / "volume.h5", "w") as handle:
        handle["raw"] = VOLUME
        handle["raw"].attrs["element_size_um"] = [0.03, 0.006, 0.006]
    assert source_voxel_size(tmp_path / "volume.h5" / "raw") == ([0.03, 0.006, 0.006], "micrometer")
    out = tmp_path / "raw.ome.zarr"
    ingest("raw", tmp_path / "volume.h5" / "raw", out, chunks=(2, 16, 16), compression=COMPRESSION, voxel_size=None,
           unit="nanometer")
    assert ome_zarr.voxel_size(out) == ([0.03, 0.006, 0.006], "micrometer")
    assert source_voxel_size(out) == ([0.03, 0.006, 0.006], "micrometer")  # an OME-Zarr image
    tifffile.imwrite(tmp_path / "plain.tif", VOLUME)
    assert source_voxel_size(tmp_path / "plain.tif") is None
    with pytest.raises(InputError, match="plain.tif: its metadata has no voxel size; set the volume.s voxel_size"):
        ingest("raw", tmp_path / "plain.tif", tmp_path / "p.ome.zarr", chunks=(2, 16, 16), compression=COMPRESSION,
               voxel_size=None, unit="nanometer")
