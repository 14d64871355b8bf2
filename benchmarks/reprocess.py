"""Reprocessing a chunked uint8 stack with an existing checkpoint: this chain against the one that copied, in one
run.

The source is a uint8 Zarr array of 2048 x 2048 sections (the synthetic block of `scale.py`, tiled). Both
chains run their stages as the workflow does (`unet-pipeline <stage>`, default settings, the fixed tiny
U-Net of `scale.py`, segment with a fixed merge threshold):

- in place (today): ingest links the source, preprocess writes its intensity statistics, predict normalises
  each tile as it reads it, segment;
- copies (the chain before): ingest copies the source into OME-Zarr, a float32 normalised copy is written
  from it (as preprocess did, slab by slab, with the same statistics), predict reads that copy, segment.

Printed: seconds and bytes written per stage and chain, bytes written per input voxel, and the ratios in
place / copies. Goals: bytes no more than the outputs themselves (probabilities + segmentation + their
pyramids); time per voxel <= 0.8x.

    python benchmarks/reprocess.py [--sections 256]   # 256 sections: 1.07 GB of raw; default 32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from scale import BLOCK, EDGE, VOLUME, run_stage, stage_config, tiny_checkpoint

from unet_pipeline.core.intensity import normalise
from unet_pipeline.stages.synth import synthetic_volume
from unet_pipeline.storage import intensity_stats, ome_zarr, pyramid_writer


def write_source(path: Path, sections: int) -> None:
    """The user's stack: a uint8 Zarr array chunked (1, 512, 512)."""
    block = synthetic_volume(BLOCK, seed=0)[0]
    copies = (EDGE // BLOCK[1], EDGE // BLOCK[2])
    array = zarr.create_array(str(path), shape=(sections, EDGE, EDGE), chunks=(1, 512, 512), dtype=np.uint8,
                              zarr_format=2)
    for z in range(sections):
        array[z] = np.tile(block[z % BLOCK[0]], copies)


def float_copy(raw: Path, statistics: Path, output: Path) -> float:
    """The normalised float32 copy the chain before wrote, slab by slab; its seconds."""
    start = time.perf_counter()
    low, high = intensity_stats.intensity_range(statistics)
    source = ome_zarr.open_input(raw)
    voxel, unit = ome_zarr.voxel_size(raw)
    target = ome_zarr.create_image(output, source.shape, np.float32, source.chunks, ome_zarr.DEFAULT_COMPRESSION,
                                   voxel, unit, "normalised")
    for z in range(source.shape[0]):
        target[z : z + 1] = normalise(source[z : z + 1], low, high)
    pyramid_writer.write_pyramid(output)  # as every image the chain wrote, and what its outputs inherit
    return time.perf_counter() - start


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder`, not counting what a link inside it points to."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def run_chain(folder: Path, source: Path, checkpoint: Path, in_place: bool) -> dict[str, tuple[float, int]]:
    """Seconds and bytes written by each stage of one chain."""
    folder.mkdir()
    config = stage_config()
    raw, intensity = folder / "raw.ome.zarr", folder / "intensity.json"
    probabilities, segmentation = folder / "probabilities.ome.zarr", folder / "segmentation.ome.zarr"
    measured = {}
    seconds, _ = run_stage("ingest", ["raw", source, raw], config, folder / "ingest.log", in_place=in_place)
    measured["ingest"] = (seconds, folder_bytes(raw))
    seconds, _ = run_stage("preprocess", [raw, intensity], config, folder / "preprocess.log")
    measured["preprocess"] = (seconds, intensity.stat().st_size)
    image, statistics = raw, str(intensity)
    if not in_place:
        image, statistics = folder / "normalised.ome.zarr", None
        measured["float32 copy"] = (float_copy(raw, intensity, image), folder_bytes(image))
    seconds, _ = run_stage("predict", [image, checkpoint, probabilities], config, folder / "predict.log",
                           intensity=statistics)
    measured["predict"] = (seconds, folder_bytes(probabilities))
    seconds, _ = run_stage("segment", [probabilities, segmentation], config, folder / "segment.log")
    measured["segment"] = (seconds, folder_bytes(segmentation))
    return measured


def stack_arguments(doc: str, sections: int, sections_help: str) -> argparse.Namespace:
    """The command line of a benchmark on the stack of `write_source`: its sections and scratch folder."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--sections", type=int, default=sections, help=sections_help)
    parser.add_argument("--scratch", type=Path, default=None, help="where the volumes go (default: a temp folder)")
    return parser.parse_args()


def main() -> None:
    args = stack_arguments(__doc__, 32, "sections of 2048 x 2048 (256: 1.07 GB)")
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        folder = Path(tmp)
        checkpoint = tiny_checkpoint(folder / "model")
        source = folder / "stack.zarr"
        write_source(source, args.sections)
        voxels = args.sections * EDGE * EDGE
        chains = {}
        for name, in_place in (("copies", False), ("in place", True)):
            chains[name] = run_chain(folder / name.replace(" ", "-"), source, checkpoint, in_place)
        print(f"[reprocess] {args.sections} x {EDGE} x {EDGE} uint8 Zarr ({voxels / 1e9:.2f} GB), volume "
              f"{VOLUME!r}, tiny U-Net, 2 predict workers")
        for name, stages in chains.items():
            total_s, total_b = sum(s for s, _ in stages.values()), sum(b for _, b in stages.values())
            parts = ", ".join(f"{stage} {s:.1f} s / {b / voxels:.3f} B" for stage, (s, b) in stages.items())
            print(f"  {name:>8}: {total_s:.1f} s, {total_b / voxels:.3f} bytes written per voxel ({parts})")
        outputs = sum(chains["in place"][stage][1] for stage in ("predict", "segment"))
        new_s, old_s = (sum(s for s, _ in chains[name].values()) for name in ("in place", "copies"))
        new_b, old_b = (sum(b for _, b in chains[name].values()) for name in ("in place", "copies"))
        print(f"  bytes written in place / copies: {new_b / old_b:.3f}; in place / its outputs (probabilities + "
              f"segmentation with pyramids): {new_b / outputs:.4f}  (goal <= 1 + metadata)")
        print(f"  time per voxel in place / copies: {new_s / old_s:.3f}  (goal <= 0.8)")


if __name__ == "__main__":
    main()
