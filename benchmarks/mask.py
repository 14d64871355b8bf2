"""A tissue mask covering 25% of a volume: predict and segment with it against without it, in one run.

The volume is the uint8 Zarr stack of `reprocess.py` (2048 x 2048 sections, read in place), the model the
fixed tiny U-Net of `scale.py`; every stage runs as the workflow runs it (`unet-pipeline <stage>`, default
settings, a fixed merge threshold). The mask is at 1/16 in y and x and marks one quadrant of every section
(25% of the voxels). Printed: the seconds of predict and segment with and without the mask, the tiles and
blocks skipped, and the speed-up. Goal: >= 3x.

    python benchmarks/mask.py [--sections 8]
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import zarr
from reprocess import stack_arguments, write_source
from scale import EDGE, run_stage, stage_config, tiny_checkpoint

from unet_pipeline.storage import ome_zarr

SCALE = 16  # the mask's factor in y and x


def write_mask(path: Path, sections: int) -> None:
    """Tissue in the first quadrant of every section, at 1/16 in y and x."""
    side = EDGE // SCALE
    mask = zarr.create_array(str(path), shape=(sections, side, side), chunks=(1, side, side), dtype=np.uint8,
                             zarr_format=2)
    quadrant = np.zeros((side, side), np.uint8)
    quadrant[: side // 2, : side // 2] = 1
    mask[:] = np.broadcast_to(quadrant, (sections, side, side))


def main() -> None:
    args = stack_arguments(__doc__, 8, "sections of 2048 x 2048")
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        folder = Path(tmp)
        checkpoint = tiny_checkpoint(folder / "model")
        config = stage_config()
        source, tissue = folder / "stack.zarr", folder / "tissue.zarr"
        write_source(source, args.sections)
        write_mask(tissue, args.sections)
        raw, intensity, mask = folder / "raw.ome.zarr", folder / "intensity.json", folder / "mask.ome.zarr"
        run_stage("ingest", ["raw", source, raw], config, folder / "ingest.log")
        run_stage("preprocess", [raw, intensity], config, folder / "preprocess.log")
        run_stage("ingest", ["mask", tissue, mask], config, folder / "mask.log", mask_of=str(source))
        seconds, skipped = {}, {}
        for name, given in (("unmasked", None), ("masked", str(mask))):
            probabilities, segmentation = folder / f"{name}-p.ome.zarr", folder / f"{name}-s.ome.zarr"
            predict_s, _ = run_stage("predict", [raw, checkpoint, probabilities], config, folder / f"{name}-p.log",
                                     intensity=str(intensity), mask=given)
            segment_s, _ = run_stage("segment", [probabilities, segmentation], config, folder / f"{name}-s.log",
                                     mask=given)
            seconds[name] = (predict_s, segment_s)
            skipped[name] = (ome_zarr.image_attrs(probabilities)["provenance"]["tiles"],
                             ome_zarr.image_attrs(segmentation)["provenance"]["blocks"])
        print(f"[mask] {args.sections} x {EDGE} x {EDGE} uint8 Zarr in place, a mask at 1/{SCALE} covering 25%, "
              "tiny U-Net, default settings")
        for name, (predict_s, segment_s) in seconds.items():
            tiles, blocks = skipped[name]
            print(f"  {name:>8}: predict {predict_s:.1f} s ({tiles['skipped']} of {tiles['tiles']} tiles skipped), "
                  f"segment {segment_s:.1f} s ({blocks['skipped']} of {blocks['blocks']} blocks skipped)")
        (p0, s0), (p1, s1) = seconds["unmasked"], seconds["masked"]
        print(f"  speed-up unmasked / masked: predict {p0 / p1:.2f}x, segment {s0 / s1:.2f}x, both "
              f"{(p0 + s0) / (p1 + s1):.2f}x  (goal >= 3)")
        print(json.dumps({"predict": p0 / p1, "segment": s0 / s1, "both": (p0 + s0) / (p1 + s1)}))


if __name__ == "__main__":
    main()
