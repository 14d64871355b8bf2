"""Overlap-tile inference over Zarr, one Dask task per output tile.

Output tiles are multiples of the output chunk shape (and of the network's
stride), so each task writes whole chunks no other task touches: no locks, no
read-modify-write, nothing gathered on the client. Each task reads its input
region plus halo, mirrored at the volume border, so the tiled result equals
the network run once on the whole mirror-padded volume.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import torch
from distributed import Client, as_completed

from . import cluster, io, progress, provenance
from .geometry import Tile, plan_tiles, tile_shape
from .mirror import read_mirrored
from .model import UNet, load_model, select_device


@functools.lru_cache(maxsize=4)
def _worker_model(checkpoint: str, checksum: str, device: str) -> UNet:
    """The model, loaded once per worker process (keyed by the checkpoint's checksum)."""
    return load_model(checkpoint, select_device(device))


def probabilities(model: UNet, block: np.ndarray) -> np.ndarray:
    """Softmax class probabilities (C, z, y, x) of a 2D model run on each section of a (z, y, x) block."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))[:, None].to(device))
        return torch.softmax(logits.float(), dim=1).transpose(0, 1).cpu().numpy()


def run_tile(tile: Tile, image_path: str, output_path: str, checkpoint: str, checksum: str, device: str,
             torch_threads: int) -> Tile:
    """Worker task: read the tile's input, run the model, write its whole output chunks."""
    torch.set_num_threads(torch_threads)
    model = _worker_model(checkpoint, checksum, device)
    block = read_mirrored(io.open_image(image_path), tile.input)
    probs = probabilities(model, block)
    output = io.open_image(output_path, mode="r+")
    output[(slice(None), *tile.output.slices())] = probs[(slice(None), *(slice(0, n) for n in tile.output.shape))]
    return tile


def predict(image_path: str | os.PathLike, checkpoint: str | os.PathLike, output: str | os.PathLike,
            tile: list[int], dtype: str, device: str, torch_threads: int, compression: dict[str, Any],
            cluster_settings: dict[str, Any]) -> None:
    """Write class probabilities (c, z, y, x) of the model over the whole image at `output`."""
    started = provenance.now()
    checksum = provenance.file_sha256(checkpoint)
    model = load_model(checkpoint)
    geometry = model.config.geometry
    image = io.open_image(image_path)
    voxel, unit = io.voxel_size(image_path)
    with io.atomic_output(output) as partial:
        target = io.create_image(partial, image.shape, dtype, image.chunks, compression, voxel, unit,
                                 "probabilities", channels=model.config.classes)
        shape = tile_shape(geometry, target.chunks[1:], tuple(tile))
        tiles = plan_tiles(geometry, image.shape, shape)
        with cluster.connect(**cluster_settings) as client:
            _run(client, tiles, str(image_path), str(partial), str(checkpoint), checksum, device, torch_threads)
        settings = {"tile": list(shape), "dtype": dtype, "device": device}
        io.set_attrs(partial, provenance=provenance.record(
            "predict", settings, {"image": str(image_path), "checkpoint": str(checkpoint)}, started,
            checkpoint_sha256=checksum))


def _run(client: Client, tiles: list[Tile], *args: Any) -> None:
    futures = client.map(run_tile, tiles, *[[a] * len(tiles) for a in args], retries=2, pure=False)
    for future in progress.track(as_completed(futures), "predict tiles", total=len(futures)):
        if future.status == "error":
            failed = tiles[futures.index(future)]
            raise RuntimeError(f"tile {failed.output} failed after retries: {future.exception()!r}")
