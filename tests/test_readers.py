"""The README's "Reading the outputs" snippets and those of docs/reading-outputs.md, run as written against
outputs of the pipeline: zarr-python, dask, tensorstore, ome-zarr-py, napari's reader plugin and neuroglancer's
Python viewer."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import COMPRESSION, REPO, segment_settings

from unet_pipeline import cli
from unet_pipeline.stages.segment import segment
from unet_pipeline.storage import ome_zarr, pyramid_writer

VOXEL = [50.0, 4.0, 4.0]


def readme_snippets() -> list[str]:
    """The README's "Reading the outputs" snippets, then those of docs/reading-outputs.md, in order."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Reading the outputs"):]
    section = section[: section.index("\n## ", 1)]
    others = (REPO / "docs" / "reading-outputs.md").read_text()
    return re.findall(r"```python\n(.*?)```", section + others, flags=re.S)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, dask_cluster):
    """results/demo/volumes/train/ with raw and labels from `unet-pipeline synth`, probabilities and a
    segmentation."""
    root = tmp_path_factory.mktemp("readers")
    demo = root / "results" / "demo" / "volumes" / "train"
    assert cli.main(["synth", str(demo), "--shape", "6,300,260", "--chunks", "2,64,64", "--seed", "3"]) == 0
    cell = (ome_zarr.open_image(demo / "labels.ome.zarr")[:] > 0).astype(np.float32)
    probs = np.stack([1 - cell, cell])
    ome_zarr.create_image(demo / "probabilities.ome.zarr", cell.shape, np.float32, (2, 64, 64), COMPRESSION, VOXEL,
                    "nanometer", "probabilities", channels=2)[:] = probs
    pyramid_writer.write_pyramid(demo / "probabilities.ome.zarr")
    segment(demo / "probabilities.ome.zarr", demo / "segmentation.ome.zarr",
            **segment_settings(dask_cluster, method="components"))
    return root


@pytest.fixture(scope="module")
def namespace(outputs):
    """Every snippet executed in order, in the folder that holds results/, sharing one namespace."""
    import os

    names: dict = {}
    cwd = os.getcwd()
    os.chdir(outputs)
    try:
        for snippet in readme_snippets():
            exec(compile(snippet, "README.md", "exec"), names)
    finally:
        os.chdir(cwd)
    yield names
    names["viewer"].server = None  # neuroglancer's server thread is a daemon; nothing else to stop


def test_the_readme_has_a_snippet_per_reader():
    snippets = "\n".join(readme_snippets())
    for library in ("zarr", "dask", "tensorstore", "ome_zarr", "napari", "neuroglancer"):
        assert f"import {library}" in snippets or f"from {library}" in snippets, library


def test_zarr_python_sees_every_level_with_its_scale(namespace, outputs):
    raw = ome_zarr.open_image(outputs / "results" / "demo" / "volumes" / "train" / "raw.ome.zarr")[:]
    assert np.array_equal(namespace["section"], raw[3])
    shapes = [level.shape for level in namespace["levels"]]
    assert shapes[:3] == [(6, 300, 260), (6, 150, 130), (6, 75, 65)]
    assert namespace["scales"][:3] == [[50.0, 4.0, 4.0], [50.0, 8.0, 8.0], [50.0, 16.0, 16.0]]
    assert [axis["unit"] for axis in namespace["multiscale"]["axes"]] == ["nanometer"] * 3


def test_dask_and_tensorstore_read_the_values(namespace, outputs):
    demo = outputs / "results" / "demo" / "volumes" / "train"
    labels = ome_zarr.open_image(demo / "labels.ome.zarr")[:]
    assert namespace["cell_fraction"] == pytest.approx((labels > 0).mean())
    assert np.array_equal(namespace["ids"], ome_zarr.open_image(demo / "segmentation.ome.zarr")[3])


def test_ome_zarr_reader_gets_axes_units_and_every_scale(namespace):
    assert [level.shape for level in namespace["pyramid"]] == [level.shape for level in namespace["levels"]]
    assert [axis["unit"] for axis in namespace["axes"]] == ["nanometer"] * 3
    assert [t[0]["scale"] for t in namespace["transforms"]] == namespace["scales"]


def test_napari_makes_an_image_and_a_labels_layer_in_physical_units(namespace):
    raw, segmentation = namespace["layers"]
    assert type(raw).__name__ == "Image" and type(segmentation).__name__ == "Labels"
    assert raw.multiscale and list(raw.scale) == [50.0, 4.0, 4.0]
    assert list(segmentation.scale) == [50.0, 4.0, 4.0] and segmentation.data[0].shape == (6, 300, 260)


def test_neuroglancer_serves_the_segmentation_in_nanometres(namespace):
    info = namespace["volume"].info()
    assert namespace["viewer"].state.layers["segmentation"].type == "segmentation"
    space = info["coordinateSpace"]
    assert space["z"] == [pytest.approx(50e-9), "m"] and space["x"] == [pytest.approx(4e-9), "m"]
    assert info["volumeType"] == "segmentation" and tuple(info["shape"]) == (6, 300, 260)
