import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from conftest import COMPRESSION, ISBI, write_image

from unet_pipeline.core.errors import InputError
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.storage import ome_zarr


def settings(chunks=(2, 16, 16)):
    return dict(chunks=chunks, compression=COMPRESSION, voxel_size=(30.0, 5.0, 5.0), unit="nanometer")


def test_tiff_stack_round_trips_with_metadata(tmp_path):
    volume = np.random.default_rng(0).integers(0, 65535, size=(5, 40, 33)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", volume)
    out = tmp_path / "raw.ome.zarr"
    ingest("raw", tmp_path / "stack.tif", out, **settings())
    array = ome_zarr.open_image(out)
    assert np.array_equal(array[:], volume) and array.chunks == (2, 16, 16)
    assert ome_zarr.voxel_size(out) == ([30.0, 5.0, 5.0], "nanometer")
    assert ome_zarr.image_attrs(out)["provenance"]["inputs"]["source"].endswith("stack.tif")


def test_ome_zarr_source_and_single_section(tmp_path):
    labels = np.random.default_rng(1).integers(0, 9, size=(1, 20, 20)).astype(np.int32)
    source = write_image(tmp_path / "in.ome.zarr", labels, (1, 20, 20))
    ingest("labels", source, tmp_path / "labels.ome.zarr", **settings())
    result = ome_zarr.open_image(tmp_path / "labels.ome.zarr")
    assert result.dtype == np.uint32 and np.array_equal(result[:], labels)
    tifffile.imwrite(tmp_path / "one.tif", labels[0].astype(np.uint8))
    ingest("raw", tmp_path / "one.tif", tmp_path / "one.ome.zarr", **settings())
    assert ome_zarr.open_image(tmp_path / "one.ome.zarr").shape == (1, 20, 20)


def nan_at(shape, where) -> np.ndarray:
    volume = np.ones(shape, np.float32)
    volume[where] = np.nan
    return volume


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"not a tiff"), "cannot read"),
        (lambda p: tifffile.imwrite(p, np.zeros((2, 3, 4, 5), np.uint8), photometric="minisblack"),
         "expected a \\(z, y, x\\) volume"),
        (lambda p: tifffile.imwrite(p, np.zeros((2, 4, 4), np.int32), photometric="minisblack"),
         "raw must be uint8, uint16 or float"),
        (lambda p: tifffile.imwrite(p, np.zeros((0, 4, 4), np.uint8), photometric="minisblack"), "cannot read|empty"),
        (lambda p: tifffile.imwrite(p, nan_at((3, 8, 8), (2, 5, 1)), photometric="minisblack"),
         r"raw has NaN or Inf values \(1 in sections 2-2, first at z=2, y=5, x=1\)"),
    ],
)
def test_bad_sources_name_the_file_and_leave_no_output(tmp_path, make, message):
    path = tmp_path / "bad.tif"
    make(path)
    with pytest.raises(InputError, match=message) as error:
        ingest("raw", path, tmp_path / "raw.ome.zarr", **settings((1, 8, 8)))
    assert "bad.tif" in str(error.value)
    assert not (tmp_path / "raw.ome.zarr").exists()


@pytest.mark.skipif(not (ISBI / "train-labels.tif").exists(), reason=f"ISBI 2012 data not found at {ISBI}")
def test_isbi_labels_ingest_exactly(tmp_path):
    ingest("labels", ISBI / "train-labels.tif", tmp_path / "labels.ome.zarr", **settings((1, 256, 256)))
    ingested = ome_zarr.open_image(tmp_path / "labels.ome.zarr")
    original = tifffile.imread(ISBI / "train-labels.tif")
    assert ingested.shape == (20, 512, 512) and np.array_equal(ingested[:], original)
    assert set(np.unique(original)) == {0, 255}


def test_float_raw_is_stored_as_float32_and_inf_is_refused(tmp_path):
    volume = np.random.default_rng(2).normal(size=(4, 16, 16))
    tifffile.imwrite(tmp_path / "float.tif", volume, photometric="minisblack")
    ingest("raw", tmp_path / "float.tif", tmp_path / "raw.ome.zarr", **settings())
    stored = ome_zarr.open_image(tmp_path / "raw.ome.zarr")
    assert stored.dtype == np.float32 and np.array_equal(stored[:], volume.astype(np.float32))
    volume[3, 0, 7] = -np.inf
    tifffile.imwrite(tmp_path / "inf.tif", volume, photometric="minisblack")
    with pytest.raises(InputError, match="inf.tif: raw has NaN or Inf values .* first at z=3, y=0, x=7"):
        ingest("raw", tmp_path / "inf.tif", tmp_path / "inf.ome.zarr", **settings())
    assert not (tmp_path / "inf.ome.zarr").exists()


def test_negative_labels_are_refused(tmp_path):
    labels = np.ones((2, 8, 8), np.int16)
    labels[1, 2, 3] = -1
    source = write_image(tmp_path / "in.ome.zarr", labels, (1, 8, 8))
    with pytest.raises(InputError, match=r"in.ome.zarr: labels have negative values .* first at z=1, y=2, x=3"):
        ingest("labels", source, tmp_path / "labels.ome.zarr", **settings())


def test_a_tiff_stack_larger_than_the_memory_cap_ingests_exactly(tmp_path):
    """Ingest in a process whose data segment (heap and anonymous mappings) is capped below the stack's size."""
    cap_mb, sections = 450, 600

    def section(z: int) -> np.ndarray:
        y, x = np.ogrid[:1024, :1024]
        return ((x * 7 + y * 3 + z * 11) % 251).astype(np.uint8) ^ np.uint8(z % 7)

    stack = tmp_path / "big.tif"
    with tifffile.TiffWriter(stack, bigtiff=True) as tif:
        for z in range(sections):
            tif.write(section(z), photometric="minisblack", contiguous=True)
    assert stack.stat().st_size > (cap_mb + 100) << 20
    output = tmp_path / "raw.ome.zarr"
    script = (
        "import json, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_DATA, ({cap_mb << 20}, {cap_mb << 20}))\n"
        "from unet_pipeline.stages.ingest import ingest\n"
        f"ingest('raw', {str(stack)!r}, {str(output)!r}, chunks=[1, 1024, 1024], compression=json.loads(sys.argv[1]),"
        " voxel_size=[50.0, 4.0, 4.0], unit='nanometer')\n")
    # thread stacks count as data: 1 MiB stacks leave the cap to the arrays (as in test_segment_scale)
    result = subprocess.run(["bash", "-c", 'ulimit -s 1024 && exec "$@"', "capped", sys.executable, "-c", script,
                             json.dumps(COMPRESSION)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    stored = ome_zarr.open_image(output)
    assert stored.shape == (sections, 1024, 1024)
    for z in range(0, sections, 37):
        assert np.array_equal(stored[z], section(z)), z
    assert np.array_equal(stored[sections - 1], section(sections - 1))


def test_the_memory_cap_is_real(tmp_path):
    """The same cap makes a whole-volume read of that size fail, so the test above could fail."""
    script = ("import resource, numpy\n"
              f"resource.setrlimit(resource.RLIMIT_DATA, ({450 << 20}, {450 << 20}))\n"
              "numpy.ones((600, 1024, 1024), numpy.uint8)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode != 0 and "MemoryError" in result.stderr
