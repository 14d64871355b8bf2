"""Crash points: stop a run right after its N-th durable step, to test that a rerun recovers from a kill there.

Each durable step a stage takes (a block or state record, attributes or a manifest written, scratch removed,
an output moved into place) calls `passed(label)` once it is done. With `UNET_PIPELINE_CRASH_LOG` naming a file,
every step of every process of the run (Dask's workers included) appends its label there as one fixed-width
line, so the line's position is the step's place in the run. With `UNET_PIPELINE_CRASH_AT=N` too, the step that
lands N-th (from 1) SIGKILLs its whole process group: no cleanup runs, as after a power cut or the OOM killer.
Unset (the default), `passed` does nothing but read the environment.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

LOG_ENV, AT_ENV = "UNET_PIPELINE_CRASH_LOG", "UNET_PIPELINE_CRASH_AT"
LINE = 160  # bytes per logged step, newline included


def passed(label: str) -> None:
    """Log the durable step `label` just taken, and die here when it is the step to crash at."""
    log = os.environ.get(LOG_ENV)
    if not log:
        return
    line = label.encode()[: LINE - 1].ljust(LINE - 1) + b"\n"
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(descriptor, line)  # one append: whole, and after every step logged before it
        index = os.lseek(descriptor, 0, os.SEEK_CUR) // LINE  # where this write ended, whatever came after
    finally:
        os.close(descriptor)
    if os.environ.get(AT_ENV) == str(index):
        os.killpg(os.getpgrp(), signal.SIGKILL)


def logged_steps(log: str | os.PathLike) -> list[str]:
    """The labels of the steps in the log `log`, in the order they were taken."""
    data = Path(log).read_bytes() if Path(log).exists() else b""
    return [data[i : i + LINE].decode().rstrip() for i in range(0, len(data) - LINE + 1, LINE)]
