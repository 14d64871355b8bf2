"""NGFF 0.5 (Zarr format 3) with shards: stages inherit the layout, parallel writers own whole shards, the
values equal the unsharded NGFF 0.4 run, and the readers open it."""

from __future__ import annotations

import numpy as np
import tensorstore
import tifffile
import zarr
from conftest import COMPRESSION, segment_settings
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from test_predict import run_predict

from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.preprocess import preprocess
from unet_pipeline.stages.segment import segment
from unet_pipeline.storage import ome_zarr
from unet_pipeline.storage.intensity_stats import intensity_range


def run_chain(tmp_path, stack, checkpoint, dask_cluster, **layout):
    folder = tmp_path / layout.get("ngff", "0.4")
    folder.mkdir()
    ingest("raw", stack, folder / "raw.ome.zarr", chunks=(1, 32, 32), compression=COMPRESSION,
           voxel_size=(50.0, 4.0, 4.0), unit="nanometer", **layout)
    preprocess(folder / "raw.ome.zarr", folder / "intensity.json", low_percentile=0.5, high_percentile=99.5)
    stats = run_predict(folder / "raw.ome.zarr", checkpoint, folder / "probabilities.ome.zarr", workers=2,
                        tile=[1, 32, 32], intensity=str(folder / "intensity.json"))
    segment(folder / "probabilities.ome.zarr", folder / "segmentation.ome.zarr",
            **segment_settings(dask_cluster, method="components"))
    return folder, stats


def test_sharded_chain_equals_unsharded_and_readers_open_it(tmp_path, random_checkpoint, dask_cluster):
    volume = np.random.default_rng(0).integers(0, 256, size=(5, 150, 70)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", volume)
    checkpoint = random_checkpoint(depth=2)
    plain, _ = run_chain(tmp_path, tmp_path / "stack.tif", checkpoint, dask_cluster)
    sharded, stats = run_chain(tmp_path, tmp_path / "stack.tif", checkpoint, dask_cluster, shards=(2, 64, 64),
                               ngff="0.5")
    assert stats["tiles"] == 3 * 3 * 2  # tiles are whole shards: 2 x 64 x 64 over 5 x 150 x 70
    assert intensity_range(plain / "intensity.json") == intensity_range(sharded / "intensity.json")
    for name in ("raw", "probabilities", "segmentation"):
        a, b = ome_zarr.open_image(plain / f"{name}.ome.zarr"), ome_zarr.open_image(sharded / f"{name}.ome.zarr")
        if name == "raw":
            assert np.array_equal(a[:], b[:]), name
        elif name == "probabilities":  # other tile sizes: float32 sums in another order
            assert np.allclose(a[:], b[:], atol=1e-5)
        else:
            assert ((a[:] > 0) == (b[:] > 0)).mean() > 0.999
        assert b.metadata.zarr_format == 3 and b.shards[-3:] == (2, 64, 64) and b.chunks[-3:] == (1, 32, 32)
        assert ome_zarr.image_attrs(sharded / f"{name}.ome.zarr")["version"] == "0.5"
    files = [p for p in (sharded / "raw.ome.zarr" / "0").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(files) == 3 * 3 * 2  # one file per shard, not one per chunk (5 x 5 x 3 = 75)

    raw = sharded / "raw.ome.zarr"
    node = next(iter(Reader(parse_url(str(raw)))()))
    levels = ome_zarr.image_attrs(raw)["multiscales"][0]["datasets"]
    assert node.data[0].shape == volume.shape and len(node.data) == len(levels)
    assert node.metadata["coordinateTransformations"][1][0]["scale"] == [50.0, 8.0, 8.0]
    store = tensorstore.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(raw / "0")}},
                             read=True).result()
    assert np.array_equal(store[2].read().result(), volume[2])
    assert zarr.open_group(str(sharded / "segmentation.ome.zarr"), mode="r").attrs["ome"]["image-label"]
