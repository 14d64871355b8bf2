"""A volume's tissue `mask`, at any scale that divides the volume's: predict and segment skip every tile and
block it does not touch, write them as zeros (every chunk file stored) and count them; what they do compute
equals the run without a mask (on the probabilities zeroed in the skipped blocks, for segment)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import yaml
from conftest import COMPRESSION, REPO, probability_image, segment_settings, write_image
from scipy import ndimage
from snakemake.utils import validate
from test_predict import run_predict

from unet_pipeline.core.errors import InputError
from unet_pipeline.core.geometry import Box
from unet_pipeline.core.mask_grid import MaskGrid, mask_factor
from unet_pipeline.distributed.blocks import block_grid
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.segment import segment
from unet_pipeline.stages.synth import synthetic_volume
from unet_pipeline.storage import chunk_files, ome_zarr
from unet_pipeline.storage.tissue_mask import TissueMask
from unet_pipeline.workflow.layout import Layout
from unet_pipeline.workflow.stage_config import ingest_settings, optional_inputs, source_spec, stage_settings

VOXEL = (50.0, 4.0, 4.0)
INGEST = dict(chunks=(1, 32, 32), compression=COMPRESSION, voxel_size=VOXEL, unit="nanometer")


def upsampled(mask: np.ndarray, factor, shape) -> np.ndarray:
    """The reference: every mask voxel repeated `factor` times per axis, cut to the volume's `shape`."""
    for axis, f in enumerate(factor):
        mask = np.repeat(mask, f, axis=axis)
    return mask[tuple(slice(0, n) for n in shape)]


def test_a_mask_is_the_volume_downsampled_by_a_whole_factor_rounding_up():
    assert mask_factor((500, 8192, 8192), (500, 512, 512)) == (1, 16, 16)
    assert mask_factor((90, 110, 7), (12, 14, 7)) == (8, 8, 1)  # 90 / 8 and 110 / 8 rounded up
    assert mask_factor((64, 64, 64), (48, 32, 32)) is None  # no whole factor gives 48 of 64
    assert mask_factor((64, 64, 64), (65, 64, 64)) is None
    assert mask_factor((64, 64), (32, 32, 1)) is None


@pytest.mark.parametrize("factor", [(1, 1, 1), (2, 3, 4), (1, 8, 5)])
def test_the_grid_of_a_cropped_mask_covers_exactly_the_mask_voxels_of_each_box(factor):
    """Against the upsampled mask: a box touches tissue exactly when the upsampled mask has some inside it,
    also for a region of interest that starts inside a mask voxel."""
    rng = np.random.default_rng(sum(factor))
    shape = (7, 41, 37)
    mask = rng.random(tuple(-(-n // f) for n, f in zip(shape, factor))) < 0.15
    full = upsampled(mask, factor, shape)
    region = Box((1, 5, 3), (7, 40, 30))
    crop, grid = MaskGrid.of(factor).cropped(region)
    cropped = mask[crop.slices()]
    for _ in range(200):
        start = rng.integers(0, region.shape)
        box = Box(start, start + rng.integers(1, 9, 3)).clip(region.shape)
        expected = full[region.slices()][box.slices()].any()
        assert cropped[grid.cover(box).clip(cropped.shape).slices()].any() == expected


def test_ingest_stores_the_mask_at_its_scale_cropped_to_the_roi_and_placed_over_its_voxels(tmp_path):
    shape, factor = (4, 90, 110), (1, 8, 8)
    mask = np.random.default_rng(2).random((4, 12, 14)) < 0.3
    tifffile.imwrite(tmp_path / "raw.tif", np.zeros(shape, np.uint8))
    tifffile.imwrite(tmp_path / "mask.tif", (mask * 255).astype(np.uint8))
    roi = {"start": [1, 10, 20], "shape": [2, 64, 70]}
    region = Box(roi["start"], np.add(roi["start"], roi["shape"]))
    ingest("mask", tmp_path / "mask.tif", tmp_path / "mask.ome.zarr", roi=roi, mask_of=str(tmp_path / "raw.tif"),
           **INGEST)
    stored = ome_zarr.open_input(tmp_path / "mask.ome.zarr")
    assert stored.dtype == np.uint8 and set(np.unique(stored[:])) <= {0, 1}
    assert np.array_equal(stored[:], mask[1:3, 1:10, 2:12])  # the mask voxels the box overlaps
    transforms = ome_zarr.image_attrs(tmp_path / "mask.ome.zarr")["multiscales"][0]["datasets"][0][
        "coordinateTransformations"]
    assert transforms[0]["scale"] == [50.0, 32.0, 32.0]
    # mask voxel (0, 1, 2) covers volume voxels from (0, 8, 16): its centre lies in the middle of them
    assert transforms[1]["translation"] == [50.0, (8 + 3.5) * 4, (16 + 3.5) * 4]
    tissue = TissueMask(tmp_path / "mask.ome.zarr", tuple(roi["shape"]), "raw")
    full = upsampled(mask, factor, shape)[region.slices()]
    for box in (Box((0, 0, 0), (1, 8, 8)), Box((1, 30, 40), (2, 34, 70)), Box((0, 60, 0), (2, 64, 70))):
        assert tissue.touches(box) == full[box.slices()].any()
    with pytest.raises(InputError, match=r"mask.ome.zarr: a mask of a volume of shape \(2, 64, 70\), but raw has "
                                         r"shape \(2, 64, 64\)"):
        TissueMask(tmp_path / "mask.ome.zarr", (2, 64, 64), "raw")


def test_a_mask_whose_scale_does_not_divide_the_volume_is_refused_naming_the_file_and_the_key(tmp_path):
    tifffile.imwrite(tmp_path / "raw.tif", np.zeros((2, 64, 64), np.uint8))
    tifffile.imwrite(tmp_path / "mask.tif", np.ones((2, 48, 32), np.uint8))
    settings = {**INGEST, "chunks": [1, 32, 32], "voxel_size": list(VOXEL), "shards": None, "ngff": "0.4",
                "pyramid": True, "missing_chunks": "refuse", "in_place": True, "roi": None, "label_mask": None,
                "ignore_label": None, "mask_of": str(tmp_path / "raw.tif")}
    result = subprocess.run([sys.executable, "-m", "unet_pipeline.cli", "ingest", "mask", str(tmp_path / "mask.tif"),
                             str(tmp_path / "mask.ome.zarr"), "--settings", json.dumps(settings)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "mask.tif: mask shape (2, 48, 32) is not the shape (2, 64, 64) of" in result.stderr
    assert "raw.tif downsampled by a whole factor per axis" in result.stderr
    assert "volumes.<volume>.mask" in result.stderr
    assert not (tmp_path / "mask.ome.zarr").exists()


def tissue(tmp_path, shape, mask: np.ndarray):
    """The ingested mask of a volume of `shape`."""
    tifffile.imwrite(tmp_path / "raw.tif", np.zeros(shape, np.uint8))
    tifffile.imwrite(tmp_path / "mask.tif", mask.astype(np.uint8))
    ingest("mask", tmp_path / "mask.tif", tmp_path / "mask.ome.zarr", mask_of=str(tmp_path / "raw.tif"), **INGEST)
    return tmp_path / "mask.ome.zarr"


def test_predict_skips_the_tiles_the_mask_does_not_touch(tmp_path, random_checkpoint, dask_cluster):
    shape = (2, 128, 128)
    mask = np.zeros((2, 8, 8), bool)  # at 1/16 in y and x
    mask[0, 1, 1] = mask[0, 2, 5] = mask[1, 7, 7] = True  # three of the 2 x 4 x 4 tiles of 32 x 32
    mask_path = tissue(tmp_path, shape, mask)
    image = write_image(tmp_path / "norm.ome.zarr", np.random.default_rng(0).random(shape, np.float32), (1, 32, 32))
    checkpoint = random_checkpoint(depth=2)
    masked = run_predict(image, checkpoint, tmp_path / "masked.ome.zarr", mask=str(mask_path),
                         cluster_settings=dask_cluster)
    run_predict(image, checkpoint, tmp_path / "whole.ome.zarr", cluster_settings=dask_cluster)
    assert masked == {"tiles": 32, "computed": 3, "resumed": 0, "skipped": 29}
    touched = upsampled(mask, (1, 16, 16), shape)
    tiles = [box for box in (b.box for b in block_grid(shape, (1, 32, 32))) if touched[box.slices()].any()]
    whole, output = (ome_zarr.open_image(tmp_path / f"{name}.ome.zarr")[:] for name in ("whole", "masked"))
    expected = np.zeros_like(whole)
    for box in tiles:
        expected[(slice(None), *box.slices())] = whole[(slice(None), *box.slices())]
    assert np.array_equal(output, expected)
    assert chunk_files.missing_keys(ome_zarr.open_image(tmp_path / "masked.ome.zarr")) == []
    recorded = ome_zarr.image_attrs(tmp_path / "masked.ome.zarr")["provenance"]
    assert recorded["tiles"]["skipped"] == 29 and recorded["inputs"]["mask"] == str(mask_path)
    again = run_predict(image, checkpoint, tmp_path / "masked.ome.zarr", mask=str(mask_path),
                        cluster_settings=dask_cluster)
    assert again == {"tiles": 32, "computed": 0, "resumed": 3, "skipped": 29}


def cell_probability(shape, seed) -> np.ndarray:
    """Smooth cell probabilities of a synthetic volume's cells."""
    _, labels = synthetic_volume(shape, seed=seed)
    smooth = ndimage.gaussian_filter((labels > 0).astype(np.float32), (0, 1.5, 1.5))
    return np.clip(smooth + np.random.default_rng(seed).normal(0, 0.05, shape), 0, 1).astype(np.float32)


SHAPE, BLOCK = (2, 128, 128), (1, 64, 64)


def blocks_touched(mask: np.ndarray) -> np.ndarray:
    """Per voxel of SHAPE, whether the mask (at 1/8 in y and x) touches its block of BLOCK."""
    touched, full = np.zeros(SHAPE, bool), upsampled(mask, (1, 8, 8), SHAPE)
    for box in (b.box for b in block_grid(SHAPE, BLOCK)):
        touched[box.slices()] = full[box.slices()].any()
    return touched


def three_of_eight_blocks() -> np.ndarray:
    mask = np.zeros((2, 16, 16), bool)  # at 1/8 in y and x
    mask[0, 3, 3] = mask[0, 9, 9] = mask[1, 12, 2] = True  # three of the 2 x 2 x 2 blocks of 64 x 64
    return mask


def masked_and_reference(tmp_path, dask_cluster, mask: np.ndarray, reference_mask: np.ndarray | None,
                         **changes) -> tuple[dict, np.ndarray, np.ndarray]:
    """Segment the same probabilities with `mask` and without one, on the probabilities zeroed outside the
    blocks `reference_mask` touches (None: as they are); the masked run's stats and both segmentations."""
    cell = cell_probability(SHAPE, seed=3)
    probabilities = probability_image(tmp_path / "p.ome.zarr", cell, (1, 32, 32))
    zeroed = probabilities if reference_mask is None else probability_image(
        tmp_path / "zeroed.ome.zarr", np.where(blocks_touched(reference_mask), cell, 0), (1, 32, 32))
    settings = segment_settings(dask_cluster, block=list(BLOCK), context=[0, 16, 16], **changes)
    stats = segment(probabilities, tmp_path / "masked.ome.zarr", **{**settings, "mask": str(tissue(tmp_path, SHAPE,
                                                                                                    mask))})
    segment(zeroed, tmp_path / "reference.ome.zarr", **settings)
    assert chunk_files.missing_keys(ome_zarr.open_image(tmp_path / "masked.ome.zarr")) == []
    assert ome_zarr.image_attrs(tmp_path / "masked.ome.zarr")["provenance"]["blocks"] == stats
    return stats, *(ome_zarr.open_image(tmp_path / f"{name}.ome.zarr")[:] for name in ("masked", "reference"))


@pytest.mark.parametrize("method", ["components", "watershed"])
def test_segment_with_a_mask_equals_segment_of_the_probabilities_zeroed_outside_the_blocks_it_touches(
        tmp_path, dask_cluster, method):
    """Exact for the methods whose segments lie where p > threshold: a block of zero probability has none."""
    mask = three_of_eight_blocks()
    stats, masked, expected = masked_and_reference(tmp_path, dask_cluster, mask, mask, method=method)
    assert stats["blocks"] == 8 and stats["skipped"] == 5 and stats["segments"] > 10
    assert np.array_equal(masked, expected)


def test_agglomerate_with_a_mask_labels_the_blocks_it_touches_alone(tmp_path, dask_cluster):
    """Fragments flood every voxel of a block they are computed in, and none crosses into a block outside the
    mask: those stay 0; a mask touching every block changes nothing."""
    mask = three_of_eight_blocks()
    stats, masked, _ = masked_and_reference(tmp_path, dask_cluster, mask, None)
    touched = blocks_touched(mask)
    assert stats["skipped"] == 5 and (masked[~touched] == 0).all() and (masked[touched] > 0).all()
    everywhere = np.zeros_like(mask)
    everywhere[:, ::8, ::8] = True  # one mask voxel in each block
    (tmp_path / "all").mkdir()
    stats, masked, expected = masked_and_reference(tmp_path / "all", dask_cluster, everywhere, None)
    assert stats["skipped"] == 0 and np.array_equal(masked, expected)


def test_the_workflow_gives_the_ingested_mask_to_predict_and_segment_alone():
    """A mask is ingested against the volume's raw source and read by predict and segment only, so a new mask
    never reruns the raw's ingest, its statistics, the weights or training."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    volume = next(name for name in config["volumes"] if name not in {e["volume"] for e in config["training"]})
    config["volumes"][volume]["mask"] = "tissue.zarr"
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    mask = Layout.of(config).volume(volume, "mask.ome.zarr")
    assert ingest_settings(config, volume, "mask")["mask_of"] == source_spec(config, volume, "raw")
    assert ingest_settings(config, volume, "raw")["mask_of"] is None
    unmasked = {name: {**given, "mask": None} for name, given in config["volumes"].items()}
    assert ingest_settings(config, volume, "raw") == ingest_settings({**config, "volumes": unmasked}, volume, "raw")
    for stage in ("predict", "segment"):
        assert optional_inputs(config, stage, volume)["mask"] == stage_settings(config, stage, volume)["mask"] == mask
    for stage in ("preprocess", "weights", "evaluate"):
        assert "mask" not in optional_inputs(config, stage, volume)


def test_segment_refuses_a_mask_of_another_volume_before_writing_anything(tmp_path, dask_cluster):
    mask_path = tissue(tmp_path, (2, 64, 64), np.ones((2, 4, 4), bool))
    probabilities = probability_image(tmp_path / "p.ome.zarr", cell_probability(SHAPE, seed=1), (1, 32, 32))
    with pytest.raises(InputError, match=r"mask.ome.zarr: a mask of a volume of shape \(2, 64, 64\), but .*p.ome.zarr "
                                         r"has shape \(2, 128, 128\)"):
        segment(probabilities, tmp_path / "s.ome.zarr", **segment_settings(dask_cluster, mask=str(mask_path)))
    assert not list(tmp_path.glob("s.ome.zarr*"))
