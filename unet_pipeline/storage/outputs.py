"""Outputs written safely: one writer at a time (a kernel lock naming its holder), written at
`<output>.partial` and moved into place when complete, so a crash never leaves an output that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
import time
from pathlib import Path
from typing import IO, Iterator

from ..core.errors import ConfigError, OutputBusy, StorageError
from . import crash_points

BUSY_POLICIES = ("refuse", "wait")
_policy = {"on_busy": "refuse"}
_HELD: dict[Path, int] = {}
WAIT_POLL_S = 1.0
WAIT_REPORT_S = 60.0


def set_on_busy(policy: str) -> None:
    """What a writer does when another live process holds its output: 'refuse' (the default) or 'wait'.

    The Snakemake rules wait: Snakemake's own directory lock admits one run per
    working directory, so a busy output there is a job left running by a killed
    Snakemake, whose work the rerun should take over rather than fail on.
    """
    if policy not in BUSY_POLICIES:
        raise ConfigError(f"on_busy must be one of {BUSY_POLICIES}, got {policy!r}")
    _policy["on_busy"] = policy


def _writer_identity() -> str:
    job = os.environ.get("SLURM_JOB_ID")
    return f"pid {os.getpid()} on {socket.gethostname()}" + (f", Slurm job {job}" if job else "")


def _locks_current_file(handle: IO[str], lock: Path) -> bool:
    """Whether `handle` is still the file named `lock` (a releasing holder unlinks it)."""
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(lock).st_ino
    except FileNotFoundError:
        return False


def _acquire(path: Path, lock: Path) -> IO[str]:
    """Open and flock `lock`, refusing or waiting (see `set_on_busy`) while another process holds it."""
    waiting_since = reported = None
    while True:
        handle = open(lock, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "pid ?"
            handle.close()
            if _policy["on_busy"] == "refuse":
                raise OutputBusy(f"{path}: another run ({holder}) is writing this output; "
                                 "wait for it to finish or stop it") from None
            now = time.monotonic()
            waiting_since = waiting_since or now
            if reported is None or now - reported >= WAIT_REPORT_S:
                print(f"waiting for {path}: another run ({holder}) is writing it "
                      f"({now - waiting_since:.0f} s so far)", flush=True)
                reported = now
            time.sleep(WAIT_POLL_S)
            continue
        if _locks_current_file(handle, lock):
            return handle
        handle.close()  # we locked a file its releasing holder had just unlinked: lock the new one


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold `<path>.lock` while writing `path`; a second writer is refused at once (or waits, see `set_on_busy`).

    The lock is the kernel's (flock): it dies with its process, so a killed run
    never leaves it stuck. Re-entrant within one process. The lock file names
    its holder (pid, host, Slurm job) for the message a second writer gets.
    """
    path = Path(path).absolute()
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    lock = path.with_name(path.name + ".lock")
    make_folder(lock.parent, path)
    with _acquire(path, lock) as handle:
        handle.seek(0)
        handle.truncate()
        handle.write(_writer_identity())
        handle.flush()
        _HELD[path] = 1
        try:
            yield
        finally:
            del _HELD[path]
            lock.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Write an output at a temporary sibling path and move it into place on success.

    A crash leaves `<path>.partial`, never a `path` that looks complete; a
    second process writing the same output at the same time is refused.
    """
    with output_lock(path):
        partial = partial_path(path)
        remove(partial)
        make_folder(partial.parent, path)
        yield partial
        commit(partial, path)


def make_folder(folder: Path, output: str | os.PathLike) -> None:
    """Make `folder` and its parents for writing `output`; a part of it that is a file is named."""
    for part in (folder, *folder.parents):
        if part.is_dir():
            break
        if part.exists():
            raise StorageError(errno.ENOTDIR, f"{part}: is a file, not a folder, so {output} cannot be written in it")
    folder.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """Name `path` in an OSError raised inside that names no file (a full disk's names none), so that its
    message says where it could not write."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            err.filename = str(path)
        raise


def partial_path(path: str | os.PathLike) -> Path:
    """Where an output is written before it is complete."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def commit(partial: Path, path: str | os.PathLike) -> None:
    """Move a finished output into place, replacing an older one."""
    remove(Path(path))
    os.replace(partial, path)
    crash_points.passed(f"commit {Path(path).name}")


def remove(path: Path) -> None:
    """Delete a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    else:
        return
    crash_points.passed(f"remove {path.name}")
