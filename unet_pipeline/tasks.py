"""Run one function over many work items on a Dask cluster: in bounded waves, with progress and a stall timeout."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from distributed import Client, as_completed

from . import progress
from .errors import PipelineError, StallError, storage_error

WAVE_MIN = 256  # items in flight at least ...
WAVE_PER_THREAD = 8  # ... or this many per worker thread, whichever is more


def wave_size(client: Client) -> int:
    """How many items run_tasks keeps submitted at once: enough to keep every worker thread busy (and an
    adaptive cluster scaling), few enough that the scheduler's memory does not grow with the volume."""
    return max(WAVE_MIN, WAVE_PER_THREAD * sum(client.nthreads().values()))


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of `size` consecutive items (the last one shorter), drawn lazily."""
    source = iter(items)
    while batch := list(itertools.islice(source, size)):
        yield batch


def run_tasks(client: Client, function: Callable[..., Any], items: Iterable[Any], label: str,
              stall_timeout_s: float, describe: Callable[[Any], str] = str,
              weight: Callable[[Any], int] = lambda item: 1, resources: dict[str, int] | None = None,
              total: int | None = None, **kwargs: Any) -> list[Any]:
    """`function(item, **kwargs)` for every item on the cluster; the results in the order of `items`.

    `items` may be a lazy iterable: they are drawn and submitted in bounded
    waves (see `wave_size`), each finished item making room for the next, so
    start-up and memory do not grow with their number. Each task is retried
    twice (e.g. when its worker dies). Stops with an error naming the item
    (through `describe`) when one fails after its retries, or when nothing
    finishes for `stall_timeout_s` seconds. Progress counts `weight(item)` per
    finished item, out of `total` (default: the sum over `items` when it is a
    list).
    """
    if total is None and isinstance(items, list):
        total = sum(map(weight, items))
    meter = progress.Meter(label, total)
    source = iter(items)
    results: list[Any] = []
    pending: dict[str, tuple[int, Any]] = {}  # future key -> (index in the results, item)
    finished = as_completed()

    def submit(count: int) -> None:
        batch = list(itertools.islice(source, count))
        if not batch:
            return
        futures = client.map(function, batch, retries=2, pure=False, resources=resources, **kwargs)
        for item, future in zip(batch, futures):
            pending[future.key] = (len(results), item)
            results.append(None)
            finished.add(future)

    submit(wave_size(client))
    last_progress = time.monotonic()
    while not finished.is_empty():
        ready = finished.next_batch(block=False)
        if not ready:
            if time.monotonic() - last_progress > stall_timeout_s:
                raise StallError(f"{label}: nothing finished within {stall_timeout_s} s ({finished.count()} "
                                 f"pending, {len(client.scheduler_info()['workers'])} workers): is the cluster alive?")
            time.sleep(0.05)
            continue
        last_progress = time.monotonic()
        for future in ready:
            if future.status != "finished":
                _raise_failure(future, describe(pending[future.key][1]))
        for future, value in zip(ready, _gather_within(client, ready, stall_timeout_s, label)):
            index, item = pending.pop(future.key)
            results[index] = value
            meter.advance(weight(item))
        submit(len(ready))
    return results


def _gather_within(client: Client, futures: list[Any], timeout_s: float, label: str) -> list[Any]:
    """The results of finished tasks, fetched from their workers; a stall when that takes over `timeout_s` (a
    worker that holds them is stopped: the fetch would wait forever, so it runs on a thread left behind)."""
    fetched: dict[str, Any] = {}

    def fetch() -> None:
        try:
            fetched["values"] = client.gather(futures)
        except BaseException as err:  # handed to the caller below
            fetched["error"] = err

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise StallError(f"{label}: the results of finished tasks did not arrive within {timeout_s} s: are the "
                         "workers that hold them alive?")
    if "error" in fetched:
        raise fetched["error"]
    return fetched["values"]


def _raise_failure(future: Any, what: str) -> None:
    error = future.exception()
    if isinstance(error, PipelineError):  # bad input the user can act on: keep its message and type
        raise type(error)(f"{what}: {error}") from error
    if (storage := storage_error(error, what)) is not None:  # a full disk or a read-only location
        raise storage from error
    raise RuntimeError(f"{what} failed after retries: {error!r}")
