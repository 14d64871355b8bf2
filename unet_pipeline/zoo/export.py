"""`unet-pipeline export CHECKPOINT OUT.zip`: a bioimage.io model package (format 0.5) of a trained U-Net.

The package holds the network as `nn.unet.ProbabilityUNet` (the U-Net with a
softmax: class probabilities out) twice, as `pytorch_state_dict` weights
with that class as the architecture and as TorchScript (traced: the crops of
the valid convolutions follow the input's size). Its axes are batch,
channel, (z,) y, x; the input's spatial sizes are the network's valid sizes
(`{min, step}`: step = 2^depth), and each output size refers to the input's
less the two halos that valid convolutions crop. Preprocessing is the
pipeline's percentile normalisation in the spec's terms: `scale_range` with
the two percentiles over the spatial axes, then `clip` to [0, 1]. The test
tensors are a crop of a real section of the sample image and the package's
own output on it; the cover is that crop beside its cell probability.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.errors import InputError
from ..core.geometry import UNetGeometry
from ..core.intensity import normalise
from ..core.probabilities import CELL_CHANNEL
from ..core.stage_settings import checked_stage
from ..nn.model_config import ModelConfig

UNET_PAPER = {"text": "Ronneberger, Fischer and Brox. U-Net: Convolutional Networks for Biomedical Image Segmentation. "
                      "MICCAI 2015", "doi": "10.1007/978-3-319-24574-4_28"}
CLASS_NAMES = ("membrane", "cell")  # channel CELL_CHANNEL is the cell class
TEST_OUTPUT = {2: 128, 3: 24}  # the test output's size per spatial axis, at least, of a 2D and a 3D model


def valid_sizes(geometry: UNetGeometry) -> tuple[int, int]:
    """(smallest valid input size, step between valid sizes) per spatial axis."""
    size = 1
    while True:
        try:
            geometry.output_size(size)
            return size, geometry.stride
        except ValueError:  # ConfigError is one too
            size += 1


def sample_input_size(geometry: UNetGeometry, available: int) -> int | None:
    """The test input's size per spatial axis: the smallest valid input whose output covers `TEST_OUTPUT`, or
    the largest valid one within `available` voxels when that is smaller (None: not even the smallest fits)."""
    smallest, step = valid_sizes(geometry)
    wanted = geometry.smallest_output_at_least(TEST_OUTPUT[geometry.ndim]) + 2 * geometry.halo
    fitting = smallest + (available - smallest) // step * step
    return min(wanted, fitting) if available >= smallest else None


def sample_crop(block: np.ndarray, geometry: UNetGeometry, name: str) -> np.ndarray:
    """The centred cube (square) crop of `block` (y, x, or z, y, x for a 3D model) the test input is, named in
    the error when not even the network's smallest input fits."""
    size = sample_input_size(geometry, min(block.shape))
    if size is None:
        raise InputError(f"{name}: {block.shape} is too small for the package's test input: it needs "
                         f"{valid_sizes(geometry)[0]} voxels along each axis the model convolves")
    starts = [(length - size) // 2 for length in block.shape]
    return block[tuple(slice(start, start + size) for start in starts)]


def percentile_normalised(crop: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """`crop` normalised as the package's preprocessing does: its own percentiles to [0, 1], clipped."""
    low, high = np.percentile(crop.astype(np.float64), percentiles)
    return normalise(crop, float(low), float(high))


@checked_stage
def export(checkpoint: str | os.PathLike, output: str | os.PathLike, *, sample: str, percentiles: list[float],
           authors: list[dict[str, str]], name: str | None, metrics: list[str]) -> dict[str, Any]:
    """Write the bioimage.io package (format 0.5) of a checkpoint at `output` (.zip), validated by bioimageio.spec.

    Args:
        sample: an image (OME-Zarr) whose middle section (or block, for a 3D model) gives the test input.
        percentiles: the low and high intensity percentiles of the normalisation (`preprocess`'s).
        authors: bioimage.io authors ({'name': ..., 'affiliation': ..., 'github_user': ...}); none: a warning.
        name: the model's name (None: 'unet-pipeline' and the checkpoint's file name).
        metrics: evaluate outputs (metrics.json) whose figures go into the documentation's Validation section.
    Returns: a summary (the package path, the test input's shape, the validation status).
    """
    import torch
    from bioimageio.spec import save_bioimageio_package

    from ..nn.checkpoint import read_checkpoint
    from ..nn.unet import ProbabilityUNet
    from ..storage import ome_zarr, outputs

    stored = read_checkpoint(checkpoint)
    config = ModelConfig.from_dict(stored["model_config"])
    network = ProbabilityUNet(**dataclasses.asdict(config)).eval()
    network.load_state_dict(stored["state_dict"])
    image = ome_zarr.open_input(sample)
    middle = image.shape[0] // 2
    wanted = sample_input_size(config.geometry, min(image.shape[-config.ndim:]))
    block = np.asarray(image[middle] if config.ndim == 2 else image[max(0, middle - (wanted or 0) // 2):][:wanted])
    raw = sample_crop(block, config.geometry, str(sample))
    with torch.no_grad():
        probabilities = network(torch.from_numpy(percentile_normalised(raw, percentiles))[None, None]).numpy()
    if not authors:
        warnings.warn("model.authors is empty: the bioimage.io package names no author", stacklevel=2)
    with tempfile.TemporaryDirectory() as folder:
        files = _package_files(Path(folder), network, raw, probabilities, config, stored, metrics)
        try:
            description = _description(config, files, percentiles, authors,
                                       name or f"unet-pipeline {Path(checkpoint).stem}", stored.get("provenance", {}),
                                       stored.get("weights_sha256"), torch.__version__)
        except ValueError as err:  # pydantic's ValidationError: a name or an author bioimage.io refuses
            raise InputError(f"{output}: the bioimage.io description does not validate: {err}") from err
        save_bioimageio_package(description, output_path=Path(folder) / "package.zip")
        with outputs.atomic_output(output) as partial:
            shutil.move(Path(folder) / "package.zip", partial)
    print(f"export: {output} (bioimage.io model, test input {raw.shape})", flush=True)
    return {"package": str(output), "test_input": list(raw.shape), "weights_sha256": stored.get("weights_sha256")}


def _package_files(folder: Path, network: Any, raw: np.ndarray, probabilities: np.ndarray, config: ModelConfig,
                   stored: dict[str, Any], metrics: Sequence[str | os.PathLike]) -> dict[str, Path]:
    """The files a package holds, written into `folder`: weights, test tensors, cover, documentation."""
    import torch
    from matplotlib import pyplot

    files = {"state_dict": folder / "weights.pt", "torchscript": folder / "weights_torchscript.pt",
             "test_input": folder / "test_input.npy", "test_output": folder / "test_output.npy",
             "cover": folder / "cover.png", "documentation": folder / "README.md"}
    torch.save(network.state_dict(), files["state_dict"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes: the crops follow the input (tested)
        torch.jit.trace(network, torch.zeros((1, 1, *raw.shape))).save(str(files["torchscript"]))
    np.save(files["test_input"], raw[None, None])
    np.save(files["test_output"], probabilities)
    halo = config.geometry.halo if config.padding == "valid" else 0
    inner = raw[tuple(slice(halo, length - halo) for length in raw.shape)]
    view = inner if config.ndim == 2 else inner[inner.shape[0] // 2]
    cell = probabilities[0, CELL_CHANNEL] if config.ndim == 2 else probabilities[0, CELL_CHANNEL, view.shape[0] // 2]
    low, high = np.percentile(view, (0.5, 99.5))
    pyplot.imsave(files["cover"], np.concatenate([normalise(view, low, max(high, low + 1)), cell], axis=1),
                  cmap="gray", vmin=0, vmax=1)
    files["documentation"].write_text(_documentation(config, stored, metrics))
    return files


def _documentation(config: ModelConfig, stored: dict[str, Any], metrics: Sequence[str | os.PathLike]) -> str:
    provenance = stored.get("provenance", {})
    lines = ["# U-Net for EM membrane segmentation (unet-pipeline)", "",
             f"A {config.ndim}D U-Net (Ronneberger et al. 2015) of depth {config.depth}, {config.base_features} "
             f"features at the top, {config.padding} convolutions, trained by unet-pipeline. Input: one EM channel, "
             "normalised by its own 0.5 and 99.5 percentile (or the percentiles in the preprocessing) to [0, 1]. "
             f"Output: the probabilities of {' and '.join(CLASS_NAMES)}, for the centre of the input (valid "
             f"convolutions crop {config.geometry.halo} voxels on each side).", "", "## Validation", ""]
    best = provenance.get("best") or stored.get("best")
    if best:
        lines.append(f"- best validation during training: {json.dumps(best)}")
    for path in metrics:
        model = json.loads(Path(path).read_text()).get("model", {})
        figures = ", ".join(f"{key} {value:.4f}" for key, value in sorted(model.items())
                            if isinstance(value, float))
        lines.append(f"- `{Path(path).parent.name}` ({Path(path).name}): {figures}")
    if len(lines) == 8:
        lines.append("- no validation figures were given to the export")
    return "\n".join(lines) + "\n"


def _description(config: ModelConfig, files: dict[str, Path], percentiles: Sequence[float],
                 authors: Sequence[dict[str, str]], name: str, provenance: dict[str, Any], weights_sha256: str | None,
                 torch_version: str) -> Any:
    """The bioimage.io model description (v0.5) of the package's files."""
    from bioimageio.spec.model import v0_5 as spec

    space = ["z", "y", "x"][-config.ndim:]
    smallest, step = valid_sizes(config.geometry)
    raw_id, probabilities_id = spec.TensorId("raw"), spec.TensorId("probabilities")
    offset = -2 * config.geometry.halo if config.padding == "valid" else 0
    inputs = [spec.InputTensorDescr(
        id=raw_id, description="an EM section (or stack), any intensity range",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier("raw")]),
              *(spec.SpaceInputAxis(id=spec.AxisId(axis), size=spec.ParameterizedSize(min=smallest, step=step))
                for axis in space)],
        test_tensor=spec.FileDescr(source=files["test_input"]),
        preprocessing=[spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(
            axes=[spec.AxisId(axis) for axis in space], min_percentile=percentiles[0], max_percentile=percentiles[1])),
            spec.ClipDescr(kwargs=spec.ClipKwargs(min=0.0, max=1.0))])]
    output_axes = [spec.SpaceOutputAxis(id=spec.AxisId(axis), size=spec.SizeReference(
        tensor_id=raw_id, axis_id=spec.AxisId(axis), offset=offset)) for axis in space] \
        if config.padding == "valid" else \
        [spec.SpaceOutputAxisWithHalo(id=spec.AxisId(axis), halo=config.geometry.halo, size=spec.SizeReference(
            tensor_id=raw_id, axis_id=spec.AxisId(axis))) for axis in space]
    outputs = [spec.OutputTensorDescr(
        id=probabilities_id, description=f"class probabilities ({', '.join(CLASS_NAMES)})",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(n) for n in CLASS_NAMES]),
              *output_axes],
        test_tensor=spec.FileDescr(source=files["test_output"]),
        data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)))]
    version = spec.Version(torch_version.split("+")[0])
    weights = spec.WeightsDescr(
        pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
            source=files["state_dict"], pytorch_version=version,
            architecture=spec.ArchitectureFromLibraryDescr(
                callable=spec.Identifier("ProbabilityUNet"), import_from="unet_pipeline.nn.unet",
                kwargs=dataclasses.asdict(config))),
        torchscript=spec.TorchscriptWeightsDescr(source=files["torchscript"], pytorch_version=version,
                                                 parent="pytorch_state_dict"))
    return spec.ModelDescr(
        name=name, description="U-Net (Ronneberger et al. 2015) for cell membranes in electron microscopy, "
                               "trained by unet-pipeline",
        authors=[spec.Author(**author) for author in authors], cite=[spec.CiteEntry(**UNET_PAPER)],
        license=spec.LicenseId("MIT"), documentation=spec.FileDescr(source=files["documentation"]),
        covers=[spec.FileDescr(source=files["cover"])], inputs=inputs, outputs=outputs, weights=weights,
        tags=["unet", "electron-microscopy", "segmentation", "membranes", f"{config.ndim}d"],
        config={"unet_pipeline": {"model": dataclasses.asdict(config), "weights_sha256": weights_sha256,
                                  "provenance": provenance}})
