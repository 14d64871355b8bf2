"""A chunked raw source (a Zarr array, an OME-Zarr image, an N5 or HDF5 dataset) is read in place: ingest links
it instead of copying, and everything downstream reads the user's own chunks, with the missing-chunk,
corrupt-chunk and fingerprint guarantees of a copy."""

import h5py
import numpy as np
import pytest
import tensorstore
import zarr
from conftest import COMPRESSION, write_n5
from test_predict import run_predict

from unet_pipeline.core.errors import InputError
from unet_pipeline.stages import verify
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.preprocess import preprocess
from unet_pipeline.storage import ome_zarr, outputs, provenance

VOXEL = dict(voxel_size=(50.0, 4.0, 4.0), unit="nanometer")
INGEST = dict(chunks=(1, 32, 32), compression=COMPRESSION, **VOXEL)


def raw_volume(shape=(3, 70, 90), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def plain_zarr(path, volume, chunks=(1, 24, 24), zarr_format=2):
    """A user's plain Zarr array, chunked unlike the pipeline's storage (and with '.' chunk keys in format 2)."""
    extra = {"chunk_key_encoding": {"name": "v2", "separator": "."}} if zarr_format == 2 else {}
    array = zarr.create_array(str(path), shape=volume.shape, chunks=chunks, dtype=volume.dtype,
                              zarr_format=zarr_format, overwrite=True, **extra)
    array[:] = volume
    return path


def ome_zarr_with_level(path, volume, level="s0"):
    """A user's OME-Zarr image (NGFF 0.5) whose level 0 is not at '0'."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.create_array(level, shape=volume.shape, chunks=(1, 32, 32), dtype=volume.dtype)[:] = volume
    axes = [{"name": axis, "type": "space", "unit": "nanometer"} for axis in "zyx"]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [
        {"path": level, "coordinateTransformations": [{"type": "scale", "scale": [40.0, 5.0, 5.0]}]}]}]}
    return path


def stored_bytes(folder) -> int:
    """Bytes of the files under `folder`, not counting what a link inside it points to."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def n5_dataset(path, volume):
    """A user's N5 dataset (as Fiji writes it), chunked unlike the pipeline's storage."""
    return write_n5(path.with_suffix(".n5") / "raw", volume, (1, 24, 24))


def hdf5_dataset(path, volume, written=None):
    """A user's chunked, gzip-compressed HDF5 dataset `em/raw`, chunked unlike the pipeline's storage; only the
    sections `written` (a slice; all by default) are written, so the other chunks are never allocated."""
    file = path.with_suffix(".h5")
    with h5py.File(file, "w") as handle:
        dataset = handle.create_dataset("em/raw", shape=volume.shape, dtype=volume.dtype, chunks=(1, 24, 24),
                                        compression="gzip")
        written = written or slice(None)
        dataset[written] = volume[written]
    return file / "em" / "raw"


@pytest.mark.parametrize("make", [plain_zarr, lambda p, v: plain_zarr(p, v, zarr_format=3), ome_zarr_with_level,
                                  n5_dataset, hdf5_dataset], ids=["zarr2", "zarr3", "ome-zarr-s0", "n5", "hdf5"])
def test_a_chunked_raw_source_is_linked_not_copied_and_predicts_exactly_as_its_copy(tmp_path, make, random_checkpoint,
                                                                                      dask_cluster):
    volume = raw_volume()
    source = make(tmp_path / "source.zarr", volume)
    linked, copied = tmp_path / "linked.ome.zarr", tmp_path / "copied.ome.zarr"
    ingest("raw", source, linked, **{**INGEST, "voxel_size": None} if make is ome_zarr_with_level else INGEST)
    ingest("raw", source, copied, in_place=False, **INGEST)
    assert ome_zarr.linked_level0(linked) is not None and stored_bytes(linked) < 4096  # metadata only
    assert ome_zarr.image_attrs(linked)["provenance"]["settings"]["in_place"] is True
    assert np.array_equal(ome_zarr.open_input(linked)[:], volume)
    if make is ome_zarr_with_level:
        assert ome_zarr.voxel_size(linked) == ([40.0, 5.0, 5.0], "nanometer")  # from the source's metadata
    checkpoint = random_checkpoint(depth=1)
    results = {}
    for name, image in (("linked", linked), ("copied", copied)):
        stats = preprocess(image, tmp_path / f"{name}.json", low_percentile=1.0, high_percentile=99.0)
        run_predict(image, checkpoint, tmp_path / f"{name}-probabilities.ome.zarr", tile=[1, 64, 64],
                    intensity=str(tmp_path / f"{name}.json"), cluster_settings=dask_cluster)
        results[name] = (stats, ome_zarr.open_image(tmp_path / f"{name}-probabilities.ome.zarr"))
    assert results["linked"][0] == results["copied"][0]
    assert results["linked"][1].chunks == results["copied"][1].chunks == (2, 1, 32, 32)  # the config's layout
    assert np.array_equal(results["linked"][1][:], results["copied"][1][:])


def test_a_source_changed_under_a_linked_image_changes_its_fingerprint_and_predict_recomputes(tmp_path,
                                                                                           random_checkpoint,
                                                                                           dask_cluster):
    source = plain_zarr(tmp_path / "source.zarr", raw_volume())
    linked = tmp_path / "raw.ome.zarr"
    ingest("raw", source, linked, **INGEST)
    checkpoint, output = random_checkpoint(depth=1), tmp_path / "probabilities.ome.zarr"
    before = provenance.input_fingerprint(linked)
    first = run_predict(linked, checkpoint, output, cluster_settings=dask_cluster)
    assert run_predict(linked, checkpoint, output, cluster_settings=dask_cluster)["computed"] == 0
    old = ome_zarr.open_image(output)[:]
    zarr.open_array(str(source), mode="r+")[1, :24, :24] = 255  # one chunk rewritten in place
    assert provenance.input_fingerprint(linked) != before
    again = run_predict(linked, checkpoint, output, cluster_settings=dask_cluster)
    assert again["computed"] == first["tiles"]  # nothing kept from the stale run
    assert not np.array_equal(ome_zarr.open_image(output)[:], old)


def test_a_linked_source_with_a_missing_or_corrupt_chunk_is_refused_naming_its_own_file(tmp_path):
    source = plain_zarr(tmp_path / "source.zarr", raw_volume())
    (source / "0.1.1").unlink()
    with pytest.raises(InputError, match=r"source.zarr: 1 of 36 chunk files are missing \(0.1.1\)"):
        ingest("raw", source, tmp_path / "raw.ome.zarr", **INGEST)
    assert not (tmp_path / "raw.ome.zarr").exists()
    plain_zarr(source, raw_volume())
    ingest("raw", source, tmp_path / "raw.ome.zarr", **INGEST)
    (source / "2.0.3").write_bytes(b"not a blosc chunk")
    with pytest.raises(InputError, match=r"source.zarr: chunk file 2.0.3 cannot be read"):
        ome_zarr.open_input(tmp_path / "raw.ome.zarr")[2]
    (source / "2.0.3").unlink()
    with pytest.raises(InputError, match=r"source.zarr: 1 of 36 chunk files are missing \(2.0.3\)"):
        ome_zarr.open_input(tmp_path / "raw.ome.zarr")


def test_an_n5_source_read_in_place_keeps_the_missing_corrupt_and_fingerprint_guarantees(tmp_path,
                                                                                         random_checkpoint,
                                                                                         dask_cluster):
    volume = raw_volume()
    source = n5_dataset(tmp_path / "source", volume)
    linked, checkpoint, output = tmp_path / "raw.ome.zarr", random_checkpoint(depth=1), tmp_path / "p.ome.zarr"
    ingest("raw", source, linked, **INGEST)
    with pytest.raises(InputError, match="reads the N5 dataset .*source.n5/raw in place, which is never written"):
        ome_zarr.open_image(linked, mode="r+")
    first = run_predict(linked, checkpoint, output, cluster_settings=dask_cluster)
    before, old = provenance.input_fingerprint(linked), ome_zarr.open_image(output)[:]
    n5 = tensorstore.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(source)}}).result().T
    n5[1, :24, :24].write(np.full((24, 24), 255, np.uint8)).result()  # one chunk rewritten in place: file 0/0/1
    assert provenance.input_fingerprint(linked) != before
    assert run_predict(linked, checkpoint, output, cluster_settings=dask_cluster)["computed"] == first["tiles"]
    assert not np.array_equal(ome_zarr.open_image(output)[:], old)
    (source / "3" / "0" / "2").write_bytes(b"not a gzip chunk")  # x 3, y 0, z 2
    with pytest.raises(InputError, match=r"source.n5/raw: chunk file 3/0/2 cannot be read"):
        ome_zarr.open_input(linked)[2]
    (source / "3" / "0" / "2").unlink()
    with pytest.raises(InputError, match=r"source.n5/raw: 1 of 36 chunk files are missing \(3/0/2\)"):
        ome_zarr.open_input(linked)
    with pytest.raises(InputError, match=r"reads .*source.n5/raw in place; a source this pipeline did not write"):
        verify.check(linked)
    outputs.remove(linked)
    assert (source / "attributes.json").is_file()  # removing the link leaves the source alone


def test_a_chunked_hdf5_source_read_in_place_keeps_the_missing_corrupt_and_fingerprint_guarantees(
        tmp_path, random_checkpoint, dask_cluster):
    volume = raw_volume()
    linked = tmp_path / "raw.ome.zarr"
    sparse = hdf5_dataset(tmp_path / "source", volume, written=slice(0, 2))
    with pytest.raises(InputError, match=r"source.h5/em/raw: 12 of 36 chunks are missing \(2/0/0, 2/0/1, 2/0/2, "
                                         r"\.\.\.\); they would be read as the fill value 0"):
        ingest("raw", sparse, linked, **INGEST)
    assert not linked.exists()
    source = hdf5_dataset(tmp_path / "source", volume)
    checkpoint, output = random_checkpoint(depth=1), tmp_path / "p.ome.zarr"
    ingest("raw", source, linked, **INGEST)
    assert ome_zarr.linked_level0(linked) == source.resolve() and stored_bytes(linked) < 4096
    with pytest.raises(InputError, match="reads the HDF5 dataset .*source.h5/em/raw in place, which is never written"):
        ome_zarr.open_image(linked, mode="r+")
    first = run_predict(linked, checkpoint, output, cluster_settings=dask_cluster)
    before, old = provenance.input_fingerprint(linked), ome_zarr.open_image(output)[:]
    with h5py.File(source.parent.parent, "r+") as handle:
        handle["em/raw"][1, :24, :24] = 255  # one chunk rewritten in place
    assert provenance.input_fingerprint(linked) != before
    assert run_predict(linked, checkpoint, output, cluster_settings=dask_cluster)["computed"] == first["tiles"]
    assert not np.array_equal(ome_zarr.open_image(output)[:], old)
    with h5py.File(source.parent.parent, "r+") as handle:
        handle["em/raw"].id.write_direct_chunk((2, 0, 72), b"not a gzip chunk")  # grid index 2/0/3
    with pytest.raises(InputError, match=r"source.h5/em/raw: chunk 2/0/3 cannot be read"):
        ome_zarr.open_input(linked)[2]
    with pytest.raises(InputError, match=r"reads .*source.h5/em/raw in place; a source this pipeline did not write"):
        verify.check(linked)
    outputs.remove(linked)
    assert h5py.is_hdf5(source.parent.parent)  # removing the link leaves the source alone


def test_float_unchunked_and_asked_for_sources_are_copied_and_replacing_a_link_leaves_the_source_intact(tmp_path):
    volume = raw_volume()
    floats = plain_zarr(tmp_path / "float.zarr", volume.astype(np.float32))
    ingest("raw", floats, tmp_path / "float.ome.zarr", **INGEST)  # copied: the copy refuses NaN and Inf
    assert ome_zarr.linked_level0(tmp_path / "float.ome.zarr") is None
    with h5py.File(tmp_path / "contiguous.h5", "w") as handle:
        handle["raw"] = volume  # no chunks: cannot be read chunk by chunk
    ingest("raw", tmp_path / "contiguous.h5" / "raw", tmp_path / "contiguous.ome.zarr", **INGEST)
    assert ome_zarr.linked_level0(tmp_path / "contiguous.ome.zarr") is None
    assert np.array_equal(ome_zarr.open_input(tmp_path / "contiguous.ome.zarr")[:], volume)
    source = plain_zarr(tmp_path / "source.zarr", volume)
    ingest("labels", source, tmp_path / "labels.ome.zarr", **INGEST)
    assert ome_zarr.linked_level0(tmp_path / "labels.ome.zarr") is None
    linked = tmp_path / "raw.ome.zarr"
    ingest("raw", source, linked, **INGEST)
    ingest("raw", source, linked, **{**INGEST, "chunks": (1, 16, 16)})  # another setting: the link is replaced
    assert ome_zarr.layout(linked)["chunks"] == (1, 16, 16)
    with pytest.raises(InputError, match=r"reads .*source.zarr in place; a source this pipeline did not write"):
        verify.check(linked)
    ingest("raw", source, linked, in_place=False, **INGEST)  # a copy replaces the link
    assert ome_zarr.linked_level0(linked) is None and stored_bytes(linked) > 4096
    outputs.remove(linked)
    assert np.array_equal(zarr.open_array(str(source), mode="r")[:], volume)  # never touched
