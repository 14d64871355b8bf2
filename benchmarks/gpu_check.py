"""GPU check of overlap-tile inference (a few minutes on one GPU).

1. Correctness: the GPU path (CUDA workers pinned by the local GPU cluster,
   batched tiles) against CPU results on the same volume: fp32 (TF32 off)
   must agree to 1e-4, bf16 and fp16 autocast to 0.05.
2. Throughput: pipeline (Zarr in, halos, model on the GPU, Zarr out) divided
   by the bare forward throughput on the GPU with the same batches already
   in GPU memory.

    python benchmarks/gpu_check.py          # exits 0 with a note where no GPU is visible
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unet_pipeline.core.geometry import plan_tiles, tile_shape
from unet_pipeline.nn.checkpoint import save_checkpoint
from unet_pipeline.nn.model_config import ModelConfig
from unet_pipeline.nn.unet import UNet
from unet_pipeline.stages.predict import predict
from unet_pipeline.storage import ome_zarr

COMPRESSION = ome_zarr.DEFAULT_COMPRESSION


def run(image: Path, checkpoint: Path, output: Path, device: str, amp: str, batch_tiles: int, tile: int) -> float:
    start = time.perf_counter()
    predict(image, checkpoint, output, tile=[1, tile, tile], batch_tiles=batch_tiles, memory_budget_mb=8192,
            dtype="float32", amp=amp, tta=False, device=device, torch_threads=4, stall_timeout_s=600,
            compression=COMPRESSION, intensity=None,
            cluster_settings={"kind": "local", "workers": 4, "threads_per_worker": 1})
    return time.perf_counter() - start


def bare_gpu_seconds(config: ModelConfig, n_tiles: int, tile: int, batch: int, amp: str) -> float:
    geometry = config.geometry
    side = geometry.input_size(geometry.smallest_output_at_least(tile))
    torch.manual_seed(0)
    model = UNet(config).cuda().eval()
    x = torch.rand(batch, 1, side, side, device="cuda")
    context = torch.autocast("cuda", dtype=torch.bfloat16) if amp == "bf16" else torch.autocast("cuda", enabled=False)
    with torch.inference_mode(), context:
        model(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n_tiles // batch):
            torch.softmax(model(x).float(), dim=1).cpu()
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible; nothing was checked")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"gpu_check on {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible)")
    config = ModelConfig(depth=4, base_features=64)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = folder / "model.pt"
        torch.manual_seed(0)
        save_checkpoint(checkpoint, UNet(config))
        small = folder / "small.ome.zarr"
        volume = np.random.default_rng(0).random((2, 500, 500), dtype=np.float32)
        ome_zarr.create_image(small, volume.shape, np.float32, (1, 128, 128), COMPRESSION, (50, 4, 4), "nanometer",
                        "small")[:] = volume
        run(small, checkpoint, folder / "cpu.ome.zarr", "cpu", "none", 1, 256)
        cpu = ome_zarr.open_image(folder / "cpu.ome.zarr")[:]
        for amp, tolerance in (("none", 1e-4), ("bf16", 0.05), ("fp16", 0.05)):
            run(small, checkpoint, folder / f"gpu-{amp}.ome.zarr", "cuda", amp, 4, 256)
            difference = float(np.abs(ome_zarr.open_image(folder / f"gpu-{amp}.ome.zarr")[:] - cpu).max())
            ok = difference <= tolerance
            failures += not ok
            print(f"  GPU amp={amp:<4} vs CPU fp32: max abs difference {difference:.2e} "
                  f"({'ok' if ok else 'FAIL'}, tolerance {tolerance})")

        large = folder / "large.ome.zarr"
        shape, tile, batch = (16, 2048, 2048), 512, 4
        ome_zarr.create_image(large, shape, np.float32, (1, 512, 512), COMPRESSION, (50, 4, 4), "nanometer", "large")
        array = ome_zarr.open_image(large, mode="r+")
        for z in range(shape[0]):
            array[z] = np.random.default_rng(z).random(shape[1:], dtype=np.float32)
        n_tiles = len(plan_tiles(config.geometry, shape, tile_shape(config.geometry, (1, 512, 512), (1, tile, tile))))
        for amp in ("none", "bf16"):
            run(large, checkpoint, folder / "warm.ome.zarr", "cuda", amp, batch, tile)
            pipeline_s = run(large, checkpoint, folder / f"large-{amp}.ome.zarr", "cuda", amp, batch, tile)
            bare_s = bare_gpu_seconds(config, n_tiles, tile, batch, amp) / torch.cuda.device_count()
            mpx = np.prod(shape) / 1e6
            print(f"  throughput amp={amp}: pipeline {mpx / pipeline_s:.1f} Mpx/s, bare forward "
                  f"{mpx / bare_s:.1f} Mpx/s ({n_tiles} tiles of {tile}, batch {batch}): ratio "
                  f"{bare_s / pipeline_s:.3f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
