"""Progress lines for long work, on stderr (Snakemake puts them in the rule's log)."""

from __future__ import annotations

import sys
import time
from typing import TypeVar

T = TypeVar("T")


class Meter:
    """Counts finished items; prints `label: done/total (elapsed)` at most every `every_s` seconds and at the end."""

    def __init__(self, label: str, total: int | None = None, every_s: float = 5.0) -> None:
        self.label, self.total, self.every_s = label, total, every_s
        self.done = 0
        self.start = self.last = time.monotonic()
        print(f"{label}: 0{f'/{total}' if total else ''} (started)", file=sys.stderr, flush=True)

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            of = f"/{self.total}" if self.total else ""
            print(f"{self.label}: {self.done}{of} ({now - self.start:.1f} s)", file=sys.stderr, flush=True)
            self.last = now

