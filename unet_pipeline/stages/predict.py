"""Overlap-tile inference over Zarr, scheduled on a Dask cluster.

Output tiles are multiples of the output chunk shape (and of the network's
stride), so each task writes whole chunks that no other task touches: no
locks, no read-modify-write, nothing gathered on the client. Each task reads
its input region plus halo, mirrored at the volume border, so the tiled
result equals the network run once on the whole mirror-padded volume.
Finished tiles are recorded, so a killed run resumes (see `records`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
import zarr

from ..core.errors import InputError
from ..core.geometry import Box, Coordinate, Shape, Tile, UNetGeometry, iter_tiles, round_up, tile_count, tile_shape
from ..core.intensity import normalised
from ..core.probabilities import to_storage
from ..core.stage_settings import checked_stage
from ..distributed import blocks, cluster, records, tasks
from ..nn.checkpoint import load_model, select_device, weights_hash
from ..nn.inference import forward_probabilities
from ..nn.mirror import read_mirrored
from ..nn.model_config import ModelConfig, activation_bytes
from ..nn.unet import UNet
from ..storage import chunk_hashes, intensity_stats, ome_zarr, provenance, pyramid_writer, tissue_mask
from ..storage.chunk_files import CheckedReads
from ..storage.tensorstore_io import RegionWriter

ZERO_TILES_PER_TASK = 64  # tiles outside the mask: nothing but zeros to write, so many to a task


@dataclass(frozen=True)
class Job:
    """What every task of one predict run shares."""

    image: str
    intensity: tuple[float, float] | None  # (low, high) normalising each tile's image; None: read as it is
    output: str
    checkpoint: str
    checksum: str
    device: str
    amp: str
    tta: bool
    dtype: str
    torch_threads: int
    run_key: str  # changes whenever the input, model or output layout does


@functools.lru_cache(maxsize=4)
def _worker_model(checkpoint: str, checksum: str, device: str) -> UNet:
    """The model, loaded once per worker process (keyed by the checkpoint's checksum)."""
    return load_model(checkpoint, select_device(device))


@functools.lru_cache(maxsize=16)
def _worker_array(path: str, mode: str, run_key: str) -> CheckedReads | RegionWriter:
    """An opened array, to read ('r': reads name a chunk file that cannot be decoded) or to write ('r+'),
    through tensorstore where it can (see `storage.tensorstore_io`), reused by the tasks of one run; a worker
    that outlives the run (an existing scheduler) must not reuse metadata of an array since rewritten at the
    same path, hence the key."""
    return ome_zarr.open_checked(path, fast=True) if mode == "r" else RegionWriter(ome_zarr.open_image(path, mode=mode))


def run_tiles(tiles: list[Tile], job: Job) -> int:
    """Worker task: read the tiles' inputs, run one batched forward pass, write whole chunks, record them."""
    torch.set_num_threads(job.torch_threads)
    model = _worker_model(job.checkpoint, job.checksum, job.device)
    image = normalised(_worker_array(job.image, "r", job.run_key), job.intensity)
    ndim = model.config.ndim
    region = Box.union([tile.input for tile in tiles])  # neighbours share their halos: one read for the batch
    block = read_mirrored(image, region)
    batch = np.concatenate([_as_batch(block[tile.input.relative_to(region)], ndim) for tile in tiles])
    probabilities = forward_probabilities(model, batch, tiles[0].network_output[-ndim:], job.amp, job.tta)
    stored = []
    for tile, probs in zip(tiles, np.split(probabilities, len(tiles))):
        probs = probs[0] if ndim == 3 else probs.transpose(1, 0, 2, 3)  # -> (C, z, y, x)
        crop = (slice(None), *(slice(0, n) for n in tile.output.shape))
        stored.append(to_storage(probs[crop], job.dtype))
    return _store(tiles, stored, job)


def write_zero_tiles(tiles: list[Tile], job: Job) -> int:
    """Worker task: write the tiles outside the tissue mask as zeros (every chunk stored), record them."""
    output = _worker_array(job.output, "r+", job.run_key)
    classes = output.array.shape[0]
    return _store(tiles, [np.zeros((classes, *tile.output.shape), job.dtype) for tile in tiles], job)


def _store(tiles: list[Tile], stored: list[np.ndarray], job: Job) -> int:
    """Write each tile's (C, z, y, x) values as whole chunks in one call, then record each tile."""
    output = _worker_array(job.output, "r+", job.run_key)
    output.write(((slice(None), *tile.output.slices()), values) for tile, values in zip(tiles, stored))
    for tile, values in zip(tiles, stored):  # each once all are written
        hashes = chunk_hashes.chunk_hashes(values, (0, *tile.output.start), output.array.chunks)
        records.record_block(job.output, blocks.block_name(tile.output.start), hashes)
    return len(tiles)


def _as_batch(block: np.ndarray, ndim: int) -> np.ndarray:
    """A (z, y, x) input block as model inputs: its sections for a 2D model, one volume for a 3D model."""
    return block if ndim == 2 else block[np.newaxis]


def auto_tile(config: ModelConfig, chunks: Shape, volume: Shape, budget_bytes: int, batch_tiles: int) -> Shape:
    """The largest tile (chunk- and stride-aligned) whose forward pass fits the memory budget estimate.

    Grows every model axis by one step at a time (axes already spanning the volume stay).
    """
    geometry = config.geometry
    step = Coordinate(tile_shape(geometry, chunks, chunks))
    spatial0 = len(volume) - config.ndim
    model_axes = Coordinate(axis >= spatial0 for axis in range(len(volume)))  # 1 on model axes, else 0
    cap = step + model_axes * (round_up(volume, step) - step)  # the volume on model axes, one step on the others
    best = step
    while best != cap:
        grown = (best + model_axes * step).minimum(cap)
        if _tile_bytes(config, geometry, grown, batch_tiles) > budget_bytes:
            break
        best = grown
    return best


def _tile_bytes(config: ModelConfig, geometry: UNetGeometry, tile: Shape, batch_tiles: int) -> int:
    spatial = tile[-config.ndim:]
    sections = 1 if config.ndim == 3 else tile[0]
    inputs = tuple(geometry.input_size(geometry.smallest_output_at_least(t)) for t in spatial)
    return activation_bytes(config, inputs, batch=sections * batch_tiles)


@checked_stage
def predict(image_path: str | os.PathLike, checkpoint_path: str | os.PathLike, output: str | os.PathLike, *,
            tile: list[int] | Literal["auto"], batch_tiles: int, memory_budget_mb: int,
            dtype: Literal["float16", "float32", "uint8"], amp: Literal["none", "bf16", "fp16"], tta: bool,
            device: Literal["auto", "cpu", "cuda"], torch_threads: int, stall_timeout_s: float,
            compression: dict[str, Any], intensity: str | None, cluster_settings: dict[str, Any],
            mask: str | None = None) -> dict[str, int]:
    """Write class probabilities (c, z, y, x) of the model over the whole image at `output`.

    Returns how many tiles there are, how many were computed, how many were
    kept from an interrupted earlier run and how many lie outside the tissue
    mask (written as zeros, the network never run there).

    Args:
        tile: (z, y, x) output tile, rounded to whole chunks and the network's
            stride and clipped to the volume; 'auto': the largest within `memory_budget_mb`.
        batch_tiles: tiles per forward pass.
        memory_budget_mb: what one forward pass may use, for `tile: auto`.
        dtype: how probabilities are stored: 'float16', 'float32' or 'uint8' (scaled by 255).
        amp: autocast on CUDA: 'none', 'bf16' or 'fp16'.
        tta: average over the 8 flips and transpositions of each tile.
        device: 'auto' (CUDA when there is one), 'cpu' or 'cuda'.
        torch_threads: torch threads per worker.
        stall_timeout_s: stop when no tile finishes for this long.
        compression: the config's `storage.compression` block.
        intensity: preprocess's intensity statistics of the image (see `storage.intensity_stats`), which
            normalise every tile as it is read; None: the image is read as it is (already normalised).
        cluster_settings: the Dask cluster (see `cluster.connect`).
        mask: ingest's tissue mask of the image (see `storage.tissue_mask`): the tiles whose output it does
            not touch are written as zeros; None: every tile is computed.
    """
    started = provenance.now()
    model = load_model(checkpoint_path)
    config, weights_sha256 = model.config, weights_hash(model.state_dict())
    checksum = provenance.file_sha256(checkpoint_path)
    image = ome_zarr.open_input(image_path)
    if image.ndim != 3:
        raise InputError(f"{image_path}: expected a (z, y, x) image, got shape {image.shape}")
    voxel, unit = ome_zarr.voxel_size(image_path)
    # the output's chunks, shards, version and pyramid: the input's (the config's for a linked input)
    layout = ome_zarr.layout(image_path)
    unit_shape = ome_zarr.layout_unit(image.shape, layout["chunks"], layout["shards"])  # tiles own whole files
    if tile == "auto":
        shape = auto_tile(config, unit_shape, image.shape, memory_budget_mb << 20, batch_tiles)
    else:
        shape = tile_shape(config.geometry, unit_shape, tuple(tile), image.shape)
    tiles = tile_count(image.shape, shape)
    intensity_range = intensity_stats.intensity_range(intensity)
    tissue = tissue_mask.open_mask(mask, image.shape, image_path)
    inputs = {"image": str(image_path), "checkpoint": str(checkpoint_path), "intensity": intensity,
              **({"mask": str(mask)} if mask else {})}
    fingerprints = provenance.fingerprint_inputs(inputs)
    key = records.run_key(model=asdict(config), weights=weights_sha256, image=fingerprints["image"],
                         intensity_range=intensity_range, **({"mask": fingerprints["mask"]} if mask else {}),
                         tile=shape, layout=layout, dtype=dtype, amp=amp, tta=tta, compression=compression)

    def create(partial: Path) -> zarr.Array:
        return ome_zarr.create_image(partial, image.shape, dtype, compression=compression, voxel_size=voxel, unit=unit,
                                     name="probabilities", channels=config.classes, origin=ome_zarr.origin(image_path),
                                     **layout)

    with records.resumable_image(output, key, create) as target:
        if target is None:  # e.g. finished by a job that a killed Snakemake left running
            print(f"predict: {output} is already complete for this model, input and settings", flush=True)
            skipped = ome_zarr.image_attrs(output)["provenance"]["tiles"].get("skipped", 0)  # none before masks
            return {"tiles": tiles, "computed": 0, "resumed": tiles - skipped, "skipped": skipped}
        outside = set() if tissue is None else {blocks.block_name(t.output.start) for t in iter_tiles(
            config.geometry, image.shape, shape) if not tissue.touches(t.output)}
        resumed = len(target.finished - outside)  # the records of this run are its finished tiles
        print(f"predict: {tiles} tiles of {shape}, {resumed} already done, {len(outside)} outside the tissue mask "
              "(written as zeros)", flush=True)

        def todo(inside: bool) -> Iterator[Tile]:  # the unfinished tiles inside (or outside) the mask, lazily
            return (t for t in iter_tiles(config.geometry, image.shape, shape)
                    if (name := blocks.block_name(t.output.start)) not in target.finished
                    and (name not in outside) == inside)

        job = Job(str(image_path), intensity_range, str(target.partial), str(checkpoint_path), checksum, device, amp,
                  tta, dtype, torch_threads, key)
        with cluster.connect(**cluster_settings, device=device, torch_threads=torch_threads) as client:
            tasks.run_tasks(client, write_zero_tiles, tasks.batched(todo(False), ZERO_TILES_PER_TASK),
                            "predict tiles outside the mask", stall_timeout_s, describe=_describe, weight=len,
                            total=len(outside - target.finished), writes=job.output, job=job)
            tasks.run_tasks(client, run_tiles, tasks.batched(todo(True), batch_tiles), "predict tiles", stall_timeout_s,
                            describe=_describe, weight=len, total=tiles - len(outside) - resumed, writes=job.output,
                            resources={cluster.GPU: 1} if cluster.gpu_workers(client) else None, job=job)
            # on the cluster's workers, not in here
            target.levels_written = pyramid_writer.write_pyramid(target.partial)
        stats = {"tiles": tiles, "computed": tiles - len(outside) - resumed, "resumed": resumed,
                 "skipped": len(outside)}
        settings = {"tile": list(shape), "batch_tiles": batch_tiles, "dtype": dtype, "amp": amp, "tta": tta,
                    "device": device, "torch_threads": torch_threads}
        ome_zarr.set_attrs(target.partial, provenance=provenance.record(
            "predict", settings, inputs, started, fingerprints, checkpoint_sha256=checksum,
            weights_sha256=weights_sha256, model=asdict(config), intensity_range=intensity_range, tiles=stats))
    return stats


def _describe(batch: list[Tile]) -> str:
    return "tile " + ", ".join(str(tile.output) for tile in batch)
