"""A volume's `roi` restricts every stage to a box: ingest reads only the box, and every output has its shape
and carries its offset as the NGFF translation, so viewers place it where it lies in the whole volume."""

import numpy as np
import pytest
import tifffile
import zarr
from conftest import COMPRESSION, segment_settings
from test_predict import run_predict

from unet_pipeline.core.errors import InputError
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.segment import segment
from unet_pipeline.stages.weights import weights
from unet_pipeline.storage import ome_zarr, pyramid_writer

VOXEL = (50.0, 4.0, 4.0)
INGEST = dict(chunks=(1, 32, 32), compression=COMPRESSION, voxel_size=VOXEL, unit="nanometer")
ROI = {"start": [1, 10, 20], "shape": [2, 64, 70]}
CROP = tuple(slice(s, s + n) for s, n in zip(ROI["start"], ROI["shape"]))
OFFSET = [s * v for s, v in zip(ROI["start"], VOXEL)]


def translation(image, level=0):
    """The translation of one level of an image's first multiscale (zeros when it has none)."""
    dataset = ome_zarr.image_attrs(image)["multiscales"][0]["datasets"][level]
    shifts = [t["translation"] for t in dataset["coordinateTransformations"] if t["type"] == "translation"]
    return shifts[0][-3:] if shifts else [0.0, 0.0, 0.0]


def test_an_roi_ingests_the_box_alone_and_every_derived_image_carries_its_offset(tmp_path, random_checkpoint,
                                                                                 dask_cluster):
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 256, (4, 90, 110), dtype=np.uint8)
    labels = rng.integers(0, 5, (4, 90, 110), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "raw.tif", volume)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    tifffile.imwrite(tmp_path / "crop.tif", volume[CROP])
    ingest("raw", tmp_path / "raw.tif", tmp_path / "raw.ome.zarr", roi=ROI, **INGEST)
    ingest("labels", tmp_path / "labels.tif", tmp_path / "labels.ome.zarr", roi=ROI, **INGEST)
    ingest("raw", tmp_path / "crop.tif", tmp_path / "crop.ome.zarr", **INGEST)
    assert np.array_equal(ome_zarr.open_input(tmp_path / "raw.ome.zarr")[:], volume[CROP])
    assert np.array_equal(ome_zarr.open_input(tmp_path / "labels.ome.zarr")[:], labels[CROP])
    assert translation(tmp_path / "raw.ome.zarr") == translation(tmp_path / "labels.ome.zarr") == OFFSET
    assert translation(tmp_path / "crop.ome.zarr") == [0.0, 0.0, 0.0]
    # the pyramid's levels keep the offset: each level's voxel centres over those of level 0 they cover
    factor = np.array(ome_zarr.image_attrs(tmp_path / "raw.ome.zarr")["multiscales"][0]["datasets"][1][
        "coordinateTransformations"][0]["scale"]) / VOXEL
    assert translation(tmp_path / "raw.ome.zarr", 1) == list(np.array(OFFSET) + (factor - 1) * VOXEL / 2)
    checkpoint = random_checkpoint(depth=1)
    for name in ("raw", "crop"):
        run_predict(tmp_path / f"{name}.ome.zarr", checkpoint, tmp_path / f"{name}-probabilities.ome.zarr",
                    tile=[1, 64, 64], cluster_settings=dask_cluster)
    boxed, crop = (ome_zarr.open_image(tmp_path / f"{name}-probabilities.ome.zarr") for name in ("raw", "crop"))
    assert boxed.shape == (2, *ROI["shape"]) and np.array_equal(boxed[:], crop[:])
    assert translation(tmp_path / "raw-probabilities.ome.zarr") == OFFSET
    segment(tmp_path / "raw-probabilities.ome.zarr", tmp_path / "segmentation.ome.zarr",
            **segment_settings(dask_cluster, method="components"))
    assert ome_zarr.open_image(tmp_path / "segmentation.ome.zarr").shape == tuple(ROI["shape"])
    assert translation(tmp_path / "segmentation.ome.zarr") == OFFSET
    weights(tmp_path / "labels.ome.zarr", tmp_path / "weights.ome.zarr", w0=10.0, sigma=5.0,
            class_balance="balanced", mode="2d", tolerance=1e-3, compression=COMPRESSION)
    assert translation(tmp_path / "weights.ome.zarr") == OFFSET
    pyramid_writer.write_pyramid(tmp_path / "weights.ome.zarr")  # rewriting the multiscales keeps the offset
    assert translation(tmp_path / "weights.ome.zarr") == OFFSET


def test_an_roi_of_a_chunked_source_is_copied_not_linked(tmp_path):
    volume = np.random.default_rng(1).integers(0, 256, (4, 90, 110), dtype=np.uint8)
    zarr.create_array(str(tmp_path / "source.zarr"), shape=volume.shape, chunks=(1, 30, 30), dtype=np.uint8,
                      zarr_format=2)[:] = volume
    ingest("raw", tmp_path / "source.zarr", tmp_path / "raw.ome.zarr", roi=ROI, **INGEST)
    assert ome_zarr.linked_level0(tmp_path / "raw.ome.zarr") is None
    assert np.array_equal(ome_zarr.open_input(tmp_path / "raw.ome.zarr")[:], volume[CROP])


@pytest.mark.parametrize("roi", [{"start": [3, 10, 20], "shape": [2, 64, 70]},
                                 {"start": [0, 0, 0], "shape": [4, 91, 110]}])
def test_an_roi_outside_the_volume_is_refused_naming_the_file_and_the_key(tmp_path, roi):
    tifffile.imwrite(tmp_path / "raw.tif", np.zeros((4, 90, 110), np.uint8))
    with pytest.raises(InputError, match=r"raw.tif: roi \(start .*, shape .*\) reaches outside the volume "
                                         r"\(shape \(4, 90, 110\)\); volumes.<volume>.roi"):
        ingest("raw", tmp_path / "raw.tif", tmp_path / "raw.ome.zarr", roi=roi, **INGEST)
    assert not (tmp_path / "raw.ome.zarr").exists()
