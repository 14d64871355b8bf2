"""A volume's `label_mask` (1 = annotated) marks its unannotated voxels as ingest stores the labels, so every
guarantee of `ignore_label` (weight 0, not in the class balance, not scored: tests/test_sparse_labels.py)
holds for a mask too."""

import numpy as np
import pytest
import tifffile
import yaml
from conftest import COMPRESSION, REPO
from snakemake.utils import validate

from unet_pipeline.core.annotation import UNANNOTATED
from unet_pipeline.core.errors import InputError
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.weights import weights
from unet_pipeline.storage import ome_zarr
from unet_pipeline.workflow.stage_config import ignore_label, ingest_settings, stage_settings

INGEST = dict(chunks=(1, 32, 32), compression=COMPRESSION, voxel_size=(50.0, 4.0, 4.0), unit="nanometer")
WEIGHTS = dict(w0=10.0, sigma=5.0, class_balance="balanced", mode="2d", tolerance=1e-3, compression=COMPRESSION)


def labelled(shape=(3, 64, 80), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Cells in a grid with membranes between them, and a mask annotating about half of it."""
    z, y, x = np.indices(shape)
    labels = (1 + (y // 16) * 8 + x // 16).astype(np.uint16)
    labels[(y % 16 == 0) | (x % 16 == 0)] = 0
    mask = (x < 40 + 10 * z).astype(np.uint8)
    return labels, mask


def test_a_label_mask_stores_unannotated_voxels_as_the_ignore_label_and_weights_them_zero(tmp_path):
    labels, mask = labelled()
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    ingest("labels", tmp_path / "labels.tif", tmp_path / "labels.ome.zarr", label_mask=str(tmp_path / "mask.tif"),
           **INGEST)
    stored = ome_zarr.open_input(tmp_path / "labels.ome.zarr")[:]
    expected = np.where(mask > 0, labels.astype(np.uint32), UNANNOTATED)
    assert stored.dtype == np.uint32 and np.array_equal(stored, expected)
    assert ome_zarr.image_attrs(tmp_path / "labels.ome.zarr")["provenance"]["inputs"]["label_mask"].endswith("mask.tif")
    # the same labels with the unannotated voxels marked by an ignore_label value instead
    tifffile.imwrite(tmp_path / "marked.tif", np.where(mask > 0, labels, 65535).astype(np.uint16))
    ingest("labels", tmp_path / "marked.tif", tmp_path / "marked.ome.zarr", **INGEST)
    weights(tmp_path / "labels.ome.zarr", tmp_path / "w-mask.ome.zarr", ignore_label=UNANNOTATED, **WEIGHTS)
    weights(tmp_path / "marked.ome.zarr", tmp_path / "w-marked.ome.zarr", ignore_label=65535, **WEIGHTS)
    from_mask = ome_zarr.open_image(tmp_path / "w-mask.ome.zarr")[:]
    assert np.array_equal(from_mask, ome_zarr.open_image(tmp_path / "w-marked.ome.zarr")[:])
    assert (from_mask[mask == 0] == 0).all() and (from_mask[mask > 0] > 0).all()


def test_a_label_mask_is_cropped_with_the_roi(tmp_path):
    labels, mask = labelled()
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    roi = {"start": [1, 8, 16], "shape": [2, 40, 48]}
    ingest("labels", tmp_path / "labels.tif", tmp_path / "labels.ome.zarr", label_mask=str(tmp_path / "mask.tif"),
           roi=roi, **INGEST)
    crop = (slice(1, 3), slice(8, 48), slice(16, 64))
    expected = np.where(mask[crop] > 0, labels[crop].astype(np.uint32), UNANNOTATED)
    assert np.array_equal(ome_zarr.open_input(tmp_path / "labels.ome.zarr")[:], expected)


def test_a_label_mask_of_another_shape_and_an_ignore_label_outside_the_labels_type_are_refused(tmp_path):
    labels, mask = labelled()
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint8))
    tifffile.imwrite(tmp_path / "mask.tif", mask[:, :32])
    with pytest.raises(InputError, match=r"mask.tif: label_mask shape \(3, 32, 80\) differs from the labels' "
                                         r"\(3, 64, 80\) \(.*labels.tif\); volumes.<volume>.label_mask"):
        ingest("labels", tmp_path / "labels.tif", tmp_path / "out.ome.zarr", label_mask=str(tmp_path / "mask.tif"),
               **INGEST)
    with pytest.raises(InputError, match=r"labels.tif: ignore_label 300 cannot occur in its uint8 labels"):
        ingest("labels", tmp_path / "labels.tif", tmp_path / "out.ome.zarr", ignore_label=300, **INGEST)
    assert not (tmp_path / "out.ome.zarr").exists()


def test_the_workflow_gives_the_masks_ignore_label_to_every_stage_and_leaves_the_raw_ingest_alone():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["volumes"]["train"]["label_mask"] = "mask.tif"
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    assert ignore_label(config, "train") == UNANNOTATED
    assert stage_settings(config, "weights", "train")["ignore_label"] == UNANNOTATED
    assert stage_settings(config, "train")["training"][0]["ignore_label"] == UNANNOTATED
    assert ingest_settings(config, "train", "labels")["label_mask"] == "mask.tif"
    assert ingest_settings(config, "train", "raw")["label_mask"] is None  # a new mask never reruns the raw
