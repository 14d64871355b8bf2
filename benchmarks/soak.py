"""Soak: the chain run again and again in one folder, SIGKILLed at a random moment each time (so in a random
stage), resumed the documented way (`snakemake --unlock`, then the same command), until it finishes; its
outputs must then hold what those of an uninterrupted run in another folder hold (`content`: every image's
values at every level with its metadata, the weights, the statistics and metrics), and no run may need
more than that (no partial output deleted, no `--rerun-incomplete`, no `--forceall`).

Printed: the uninterrupted run's time, each killed run's moment and the jobs it had finished, the runs the
chain needed to finish, and whether every output matched.

    python benchmarks/soak.py [--kills 20] [--config config/config.yaml] [--tiny] [--seed 0] [--scratch DIR]

`--tiny`: the crash sweep's small run (`benchmarks/crash_sweep.py`) instead of a config file; minutes, not hours.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from crash_sweep import CONFIG as TINY

from unet_pipeline.stages import verify
from unet_pipeline.storage import ome_zarr
from unet_pipeline.workflow import crash_sweep

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]


def jobs_left(workdir: Path) -> int:
    """How many jobs a run in `workdir` would still run (Snakemake's dry run)."""
    result = subprocess.run(snakemake(workdir, "--dry-run", "--quiet", "rules"), capture_output=True, text=True)
    totals = [line.split() for line in (result.stdout + result.stderr).splitlines() if line.startswith("total ")]
    return int(totals[0][1]) if totals else 0  # Snakemake prints its job stats twice; nothing to do: none


def killed_run(workdir: Path, after_s: float) -> bool:
    """Run the chain, SIGKILL its whole process group (Snakemake, its jobs, their Dask workers) after
    `after_s` seconds; whether it had finished first."""
    process = subprocess.Popen(snakemake(workdir), start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        process.wait(after_s)
        return process.returncode == 0
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        time.sleep(1)  # the group's last processes exit
        subprocess.run(snakemake(workdir, "--unlock"), check=True, capture_output=True)
        return False


VALUED = (".ome.zarr", ".pt", ".zip", "intensity.json", "metrics.json")  # outputs compared by what they hold


def content(path: Path) -> Any:
    """What an output holds, whatever the folder it was made in (its provenance names that folder's input
    fingerprints, which differ: the synthetic sources' file times): an image's values at every level and the
    metadata shaping them, a checkpoint's or package's weights, a statistics or metrics file's figures."""
    if path.suffix == ".json":
        return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("provenance", "segmentation")}
    if path.suffix == ".zarr" and ome_zarr.linked_level0(path) is not None:
        return "a link"  # to a source compared itself (synth's volume)
    report = verify.check(path)
    return tuple(report.get(key) for key in ("fingerprint", "levels_fingerprint", "metadata_sha256"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="killed runs before the last one (default 20)")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--tiny", action="store_true", help="the crash sweep's small run instead of --config")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", type=Path, default=None, help="where the runs go (default: a temp folder)")
    args = parser.parse_args()
    config = TINY if args.tiny else yaml.safe_load(args.config.read_text())
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        clean, soaked = Path(tmp) / "clean", Path(tmp) / "soaked"
        for folder in (clean, soaked):
            folder.mkdir()
            (folder / "config.yaml").write_text(yaml.safe_dump(config))
        start = time.perf_counter()
        subprocess.run(snakemake(clean), check=True, capture_output=True)
        clean_s = time.perf_counter() - start
        jobs = jobs_left(soaked)
        paths = sorted({o for job in crash_sweep.planned_jobs(snakemake(clean), clean) for o in job.outputs})
        print(f"[soak] uninterrupted: {jobs} jobs in {clean_s:.0f} s; now {args.kills} runs killed at random "
              "moments in one folder", flush=True)
        runs, done = 0, False
        for kill in range(args.kills):
            moment = rng.uniform(0.05, 0.6) * clean_s * jobs_left(soaked) / jobs  # inside what is left to do
            done = killed_run(soaked, moment)
            runs += 1
            left = jobs_left(soaked)
            print(f"  run {runs:2d}: killed after {moment:5.1f} s, {jobs - left}/{jobs} jobs done"
                  + (" (finished before the kill)" if done else ""), flush=True)
            if done or left == 0:
                break
        if not done:
            last = subprocess.run(snakemake(soaked), capture_output=True, text=True)
            runs += 1
            if last.returncode != 0:
                print(f"  the last run failed (exit {last.returncode}):\n{last.stderr[-3000:]}")
                sys.exit(1)
        compared = [path for path in paths if path.endswith(VALUED)]
        different = [path for path in compared if content(clean / path) != content(soaked / path)]
        print(f"  finished after {runs} runs; {len(compared)} outputs compared, "
              f"{len(different)} different"
              + (f": {different}" if different else " (every output equals the uninterrupted run's)"))
        sys.exit(1 if different else 0)


if __name__ == "__main__":
    main()
