"""The crash-point sweep over the whole chain: one job of every rule of a small run, killed at up to 20 of its
durable steps (always its last five: commit, cleanup, pyramid, provenance, rename), then rerun
(`unet_pipeline.workflow.crash_sweep`).

The run is the tests' tiny config (two 4 x 64 x 64 synthetic volumes, one labeled; a depth-2 U-Net trained for
a few iterations, checkpointed every iteration so that training has steps to be killed at). Printed: per
rule, the durable steps of an uninterrupted run, the kill points tried and how many passed (the job died
there, nothing at an output path was incomplete, the rerun exited 0 and wrote the finished run's outputs),
and each failure with the step's label.

    python benchmarks/crash_sweep.py [--points 20] [--rules weights segment] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from unet_pipeline.workflow import crash_sweep

REPO = Path(__file__).resolve().parents[1]
CONFIG = {
    "name": "sweep",
    "volumes": {"a": {"synthetic": {"shape": [4, 64, 64], "seed": 1}},
                "b": {"synthetic": {"shape": [4, 64, 64], "seed": 2, "labels": False}}},
    "training": [{"volume": "a", "sections": [0, 2]}],
    "validation": [{"volume": "a", "sections": [2, 3]}],
    "evaluation": [{"volume": "a", "sections": [3, 4]}],
    "storage": {"chunks": [1, 32, 32]},
    "model": {"depth": 2, "base_features": 4},
    "train": {"iterations": 4, "tile": 36, "batch_size": 1, "validate_every": 2, "checkpoint_every": 1,
              "threads": 1},
    "predict": {"tile": [1, 32, 32]},
    "cluster": {"workers": 1},
    "report": {"sections": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=20, help="kill points per job at most (default 20)")
    parser.add_argument("--scratch", type=Path, default=None, help="where the runs go (default: a temp folder)")
    parser.add_argument("--rules", nargs="*", default=None, help="sweep only these rules (default: every rule)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        finished = Path(tmp) / "finished"
        finished.mkdir()
        (finished / "config.yaml").write_text(yaml.safe_dump(CONFIG))
        snakemake = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(finished),
                     "--configfile", str(finished / "config.yaml"), "--cores", "2"]
        subprocess.run(snakemake, check=True, capture_output=True)
        first_of_rule: dict[str, crash_sweep.Job] = {}
        for job in crash_sweep.planned_jobs(snakemake, finished):
            first_of_rule.setdefault(job.rule, job)
        print(f"[crash_sweep] a {CONFIG['volumes']['a']['synthetic']['shape']} run, one job per rule, up to "
              f"{args.points} kill points each")
        tried = failed = 0
        for rule, job in first_of_rule.items():
            if args.rules and rule not in args.rules:
                continue
            start = time.perf_counter()
            points = crash_sweep.sweep_job(job, finished, Path(tmp) / rule,
                                           lambda steps: crash_sweep.sample_steps(steps, args.points))
            passing = [p for p in points if p.passed]
            tried, failed = tried + len(points), failed + len(points) - len(passing)
            print(f"  {rule:>10}: {points[0].steps:3d} durable steps, {len(points):2d} kill points tried, "
                  f"{len(passing):2d} passed ({time.perf_counter() - start:.0f} s)", flush=True)
            for p in points:
                if not p.passed:
                    print(f"      FAILED at step {p.step} ({p.label}): killed {p.killed}, incomplete {p.incomplete},"
                          f" rerun exit {p.rerun_status}, different {p.different}", flush=True)
        print(f"  all: {tried} kill points, {tried - failed} passed")
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
