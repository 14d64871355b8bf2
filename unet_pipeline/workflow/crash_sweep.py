"""The crash-point sweep: kill each job of a finished workflow run at its durable steps, rerun it, and check that
the rerun needs no manual step and writes exactly what the uninterrupted run wrote.

The jobs are the workflow's own (their shell commands from a Snakemake dry run, so each stage runs as the
workflow runs it). For one job and one step index N (see `storage.crash_points`): a copy of the finished run
loses the job's outputs, the job runs killed at its N-th durable step (its whole process group, Dask's workers
included), nothing at an output path may then be incomplete (absent, or equal to the finished run's), the job
runs again, and its outputs must equal the finished run's: every file byte for byte, attributes and tables
up to their run history (see `file_digests`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from ..storage import crash_points, outputs
from .job_environment import put_scripts_on_path

RUN_HISTORY = ("started", "finished", "computed", "resumed", "seconds")  # keys and table columns that say how a
# run went (when, how long, how much it resumed), not what it wrote: an interrupted and an uninterrupted run differ
TORCHSCRIPT_SERIALIZATION_ID = ".data/serialization_id"  # random in every TorchScript archive
SNAKEMAKE_MARKER = ".snakemake_timestamp"  # Snakemake's own file in a directory output, not the job's
JOB_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Job:
    """One job of a workflow run: its rule, its output paths (relative to the working directory), its command."""

    rule: str
    outputs: tuple[str, ...]
    command: str


@dataclasses.dataclass(frozen=True)
class KillPoint:
    """What a kill at step `step` of `job` (of `steps` in an uninterrupted run) left and what the rerun did."""

    job: Job
    step: int
    steps: int
    label: str
    killed: bool  # the job died at the step (not: it finished first)
    incomplete: list[str]  # output paths holding something other than the finished run's output after the kill
    rerun_status: int
    different: list[str]  # files of the rerun's outputs that differ from the finished run's ('<output>/<file>')

    @property
    def passed(self) -> bool:
        return self.killed and not self.incomplete and self.rerun_status == 0 and not self.different


def planned_jobs(snakemake: Sequence[str], workdir: Path) -> list[Job]:
    """Every job a run of `snakemake` (its command line, without targets) would execute from scratch in
    `workdir`, in an order that respects their dependencies (a forced dry run's)."""
    result = subprocess.run([*snakemake, "--dry-run", "--printshellcmds", "--forceall"], cwd=workdir,
                            capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"snakemake dry run failed in {workdir}: {result.stderr[-2000:]}")
    jobs, rule, produced = [], None, ()
    for line in (result.stdout + result.stderr).splitlines():
        if (match := re.match(r"(?:local)?rule (\w+):", line)) is not None:
            rule, produced = match.group(1), ()
        elif (match := re.match(r"\s+output: (.*)", line)) is not None:
            produced = tuple(match.group(1).split(", "))
        elif line.startswith("Shell command: ") and rule is not None and line != "Shell command: None":
            jobs.append(Job(rule, produced, line.removeprefix("Shell command: ")))
    return jobs


def run_job(job: Job, workdir: Path, log: Path, crash_at: int | None = None) -> int:
    """Run `job` in `workdir` in a process group of its own, its durable steps logged to `log` (and killed at
    step `crash_at`); its exit status (negative: the signal that killed it)."""
    put_scripts_on_path()  # as the Snakefile does for the rules' commands
    env = {**os.environ, crash_points.LOG_ENV: str(log)}
    env.pop(crash_points.AT_ENV, None)
    if crash_at is not None:
        env[crash_points.AT_ENV] = str(crash_at)
    return subprocess.run(["bash", "-c", job.command], cwd=workdir, env=env, start_new_session=True,
                          timeout=JOB_TIMEOUT_S).returncode


def file_digests(path: Path, run: Path) -> dict[str, str] | None:
    """The digest of each file of the output at `path` of the run in the folder `run`, by its path inside the
    output (None when absent; '' for a file output): every file's bytes, except that JSON attributes,
    checkpoints and tables drop their `RUN_HISTORY` keys and columns, JSON names the run's folder '<run>' (a
    linked image records its source's absolute path), a checkpoint counts by its contents (each tensor's
    bytes) and a bioimage.io package by its members (see `_stable_archive`)."""
    if not path.exists():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != SNAKEMAKE_MARKER) if path.is_dir() \
        else [path]
    return {str(file.relative_to(path)) if file != path else "":
            hashlib.sha256(_stable_bytes(file, run)).hexdigest() for file in files}


def differing_files(output: str, expected: dict[str, str] | None, run: Path) -> list[str]:
    """The files of `output` in the folder `run` whose digests are not `expected` (see `file_digests`), and those
    missing or extra, each as '<output>/<file>'."""
    found = file_digests(run / output, run)
    if found is None or expected is None:
        return [] if found == expected else [output]
    return [f"{output}/{name}".rstrip("/") for name in sorted(expected.keys() | found.keys())
            if expected.get(name) != found.get(name)]


def _stable_bytes(file: Path, run: Path) -> bytes:
    if file.name in (".zattrs", "zarr.json", ".zgroup") or file.suffix == ".json":
        text = json.dumps(_stable(json.loads(file.read_text())), sort_keys=True)
        return text.replace(str(run.resolve()), "<run>").encode()
    if file.suffix == ".pt":
        import torch

        return repr(_stable(torch.load(file, map_location="cpu", weights_only=True))).encode()
    if file.suffix == ".csv":  # a table (the training log): without its run-history columns
        rows = [{k: v for k, v in row.items() if k not in RUN_HISTORY} for row in csv.DictReader(io.StringIO(
            file.read_text()))]
        return json.dumps(rows).encode()
    if file.suffix == ".zip":  # a bioimage.io package
        return _stable_archive(file.read_bytes())
    return file.read_bytes()


def _stable_archive(data: bytes) -> bytes:
    """A zip archive's members by name and contents, without what differs between two writes of the same
    package: the zip's own dates, the description's `timestamp` and TorchScript's `sha256`, and the random
    `serialization_id` of a TorchScript archive inside (whose bytes count otherwise, member by member)."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in sorted(archive.namelist()):
            if name.endswith(TORCHSCRIPT_SERIALIZATION_ID):
                continue
            member = archive.read(name)
            if name == "rdf.yaml":
                description = yaml.safe_load(member)
                description.pop("timestamp", None)
                description.get("weights", {}).get("torchscript", {}).pop("sha256", None)
                member = json.dumps(description, sort_keys=True).encode()
            elif zipfile.is_zipfile(io.BytesIO(member)):
                member = _stable_archive(member)
            digest.update(f"{name}\0".encode() + hashlib.sha256(member).digest())
    return digest.digest()


def _stable(value: Any) -> Any:
    """`value` without its `RUN_HISTORY` keys, each tensor in it as its shape, type and a hash of its bytes."""
    if isinstance(value, dict):
        return {key: _stable(item) for key, item in value.items() if key not in RUN_HISTORY}
    if isinstance(value, (list, tuple)):
        return [_stable(item) for item in value]
    if hasattr(value, "detach"):  # a tensor
        data = value.detach().cpu().contiguous().numpy().tobytes()
        return f"tensor {tuple(value.shape)} {value.dtype} {hashlib.sha256(data).hexdigest()}"
    return value


def sample_steps(steps: int, count: int, last: int = 5) -> list[int]:
    """`count` step indices spread over 1..`steps`, always with the `last` final ones (all when `count` covers
    them)."""
    if count >= steps:
        return list(range(1, steps + 1))
    final = list(range(max(1, steps - last + 1), steps + 1))
    spread = max(count - len(final), 0)
    early = {1 + round(i * (steps - len(final) - 1) / max(spread - 1, 1)) for i in range(spread)}
    return sorted(early | set(final))


def fresh_copy(finished: Path, scratch: Path, job: Job) -> Path:
    """A copy of the finished run at `scratch` as if `job` had never run there: without its outputs, their
    partial outputs and a checkpoint's training state, and with the links into the run (an image linked to a
    source the run made) pointing into the copy."""
    outputs.remove(scratch)
    shutil.copytree(finished, scratch, symlinks=True)
    for link in (p for p in scratch.rglob("*") if p.is_symlink()):
        target = Path(os.readlink(link))
        if target.is_relative_to(finished.resolve()):
            link.unlink()
            link.symlink_to(scratch.resolve() / target.relative_to(finished.resolve()))
    for output in job.outputs:
        for path in (scratch / output, outputs.partial_path(scratch / output)):
            outputs.remove(path)
        if output.endswith(".pt"):  # a checkpoint: its training run's resumable state goes too
            from ..nn.checkpoint import training_state

            outputs.remove(training_state(scratch / output))
    return scratch


def sweep_job(job: Job, finished: Path, scratch: Path, choose: Callable[[int], list[int]]) -> list[KillPoint]:
    """Kill `job` at the durable steps that `choose` picks from the number of its steps (e.g. `sample_steps`),
    each in a copy of the finished run `finished` made under `scratch`, and check each rerun."""
    expected = {output: file_digests(finished / output, finished) for output in job.outputs}
    counted = fresh_copy(finished, scratch / "counted", job)
    if run_job(job, counted, scratch / "counted.log") != 0:
        raise RuntimeError(f"{job.rule} ({job.command[:200]}) failed when run uninterrupted in {counted}")
    labels = crash_points.logged_steps(scratch / "counted.log")
    (scratch / "counted.log").unlink()
    points = []
    for step in choose(len(labels)):
        copy, log = fresh_copy(finished, scratch / "killed", job), scratch / "killed.log"
        status = run_job(job, copy, log, crash_at=step)
        killed = status < 0 and len(crash_points.logged_steps(log)) >= step
        log.unlink(missing_ok=True)
        incomplete = [o for o in job.outputs if file_digests(copy / o, copy) not in (None, expected[o])]
        rerun = run_job(job, copy, log)
        log.unlink(missing_ok=True)
        different = [name for o in job.outputs for name in differing_files(o, expected[o], copy)]
        points.append(KillPoint(job, step, len(labels), labels[step - 1], killed, incomplete, rerun, different))
    return points
