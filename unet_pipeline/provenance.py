"""Provenance records stored with every output: what made it, from what, when."""

from __future__ import annotations

import datetime
import functools
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

from . import __version__


@functools.cache
def git_commit() -> str | None:
    """The commit of the package's source tree, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def record(stage: str, settings: dict[str, Any], inputs: dict[str, str], started: str, **extra: Any) -> dict[str, Any]:
    """A provenance record; call when the stage's work is done (it stamps the end time)."""
    return {
        "stage": stage,
        "settings": settings,
        "inputs": inputs,
        "package_version": __version__,
        "git_commit": git_commit(),
        "started": started,
        "finished": now(),
        **extra,
    }
