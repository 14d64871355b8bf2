"""Progress lines for long loops, on stderr (Snakemake puts them in the rule's log)."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, Sized, TypeVar

T = TypeVar("T")


def track(items: Iterable[T], label: str, every_s: float = 5.0, total: int | None = None) -> Iterator[T]:
    """Yield from `items`, printing `label: done/total` at most every `every_s` seconds and at the end."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every_s or done == total:
            report(label, done, total, now - start)
            last = now


def report(label: str, done: int, total: int | None, elapsed: float) -> None:
    of = f"/{total}" if total else ""
    print(f"{label}: {done}{of} ({elapsed:.1f} s)", file=sys.stderr, flush=True)
