"""Run one function over many work items on a Dask cluster: in bounded waves, with progress and a stall timeout.

Items that take little time are grouped, several to a Dask task: each task
costs the scheduler, the client and the worker about a millisecond whatever
it does, so tasks are sized from the measured seconds per item to about
`TASK_TARGET_S` (Dask's own advice: tasks of 100 ms or more), up to
`GROUP_MAX` items. An item is still the unit of work a stage records.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from distributed import Client, as_completed
from distributed.scheduler import KilledWorker

from ..core import progress
from ..core.errors import PipelineError, StallError, storage_error, workers_lost
from ..storage import outputs

WAVE_MIN = 256  # tasks in flight at least ...
WAVE_PER_THREAD = 8  # ... or this many per worker thread, whichever is more
TASK_TARGET_S = 0.1  # how long a task of grouped items should take
GROUP_MAX = 64  # items per task at most
FAILED_ITEM = "failed_item_index"  # attribute set on the error of a group's failing item


def wave_size(client: Client) -> int:
    """How many tasks run_tasks keeps submitted at once: enough to keep every worker thread busy (and an
    adaptive cluster scaling), few enough that the scheduler's memory does not grow with the volume."""
    return max(WAVE_MIN, WAVE_PER_THREAD * sum(client.nthreads().values()))


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of `size` consecutive items (the last one shorter), drawn lazily."""
    source = iter(items)
    while batch := list(itertools.islice(source, size)):
        yield batch


def group_size(seconds_per_item: float | None) -> int:
    """Items per task for tasks of about `TASK_TARGET_S`; one until a task has been measured."""
    if seconds_per_item is None:
        return 1
    return max(1, min(GROUP_MAX, int(TASK_TARGET_S / max(seconds_per_item, 1e-6))))


def run_group(function: Callable[..., Any], items: list[Any], writes: str | None,
              **kwargs: Any) -> tuple[list[Any], float]:
    """Worker task: `function(item, **kwargs)` for each item in turn; the results and the seconds they took.
    An item's error leaves with its index in the group (attribute `FAILED_ITEM`), and an OSError that names
    no file with `writes` (the folder the items write in) as its file."""
    started = time.perf_counter()
    results = []
    for index, item in enumerate(items):
        try:
            with outputs.naming(writes) if writes else contextlib.nullcontext():
                results.append(function(item, **kwargs))
        except BaseException as error:
            setattr(error, FAILED_ITEM, index)
            raise
    return results, time.perf_counter() - started


def run_tasks(client: Client, function: Callable[..., Any], items: Iterable[Any], label: str,
              stall_timeout_s: float, describe: Callable[[Any], str] = str,
              weight: Callable[[Any], int] = lambda item: 1, resources: dict[str, int] | None = None,
              total: int | None = None, writes: str | None = None, **kwargs: Any) -> list[Any]:
    """`function(item, **kwargs)` for every item on the cluster; the results in the order of `items` (see
    `completed_tasks`, which hands them over as they finish instead of holding them all)."""
    results: dict[int, Any] = dict(completed_tasks(client, function, items, label, stall_timeout_s, describe, weight,
                                                   resources, total, writes, **kwargs))
    return [results[index] for index in range(len(results))]


def completed_tasks(client: Client, function: Callable[..., Any], items: Iterable[Any], label: str,
                    stall_timeout_s: float, describe: Callable[[Any], str] = str,
                    weight: Callable[[Any], int] = lambda item: 1, resources: dict[str, int] | None = None,
                    total: int | None = None, writes: str | None = None,
                    **kwargs: Any) -> Iterator[tuple[int, Any]]:
    """(index of the item in `items`, `function(item, **kwargs)`) for every item on the cluster, as tasks finish.

    `items` may be a lazy iterable: they are drawn and submitted in bounded
    waves of tasks (see `wave_size`; quick items several to a task, see
    `group_size`), each finished task making room for the next, so start-up
    and memory do not grow with their number. Each task is retried twice
    (e.g. when its worker dies). Stops with an error naming the item (through
    `describe`) when one fails after its retries or keeps killing its workers
    (`WorkersLost`), or when nothing finishes for `stall_timeout_s` seconds
    while the cluster has had a worker (the clock starts when the first one
    is up: starting workers, or waiting in a batch queue, is no stall).
    Progress counts `weight(item)` per finished
    item, out of `total` (default: the sum over `items` when it is a list).
    A full disk is named by its file, or by `writes` (the folder the tasks
    write in) when the file system names none.
    """
    if total is None and isinstance(items, list):
        total = sum(map(weight, items))
    meter = progress.Meter(label, total)
    waves = _Waves(client, function, items, resources, writes, kwargs)
    waves.submit(wave_size(client))
    last_progress = None  # since the first worker was up, then since the last task finished
    while not waves.finished.is_empty():
        ready = waves.finished.next_batch(block=False)
        if not ready:
            if last_progress is None:
                last_progress = time.monotonic() if client.scheduler_info()["workers"] else None
            elif time.monotonic() - last_progress > stall_timeout_s:
                raise StallError(f"{label}: nothing finished within {stall_timeout_s} s ({waves.finished.count()} "
                                 f"pending, {len(client.scheduler_info()['workers'])} workers): is the cluster alive?")
            time.sleep(0.05)
            continue
        last_progress = time.monotonic()
        statuses = [(future, future.status) for future in ready]
        for future, status in statuses:
            if status in ("error", "cancelled"):
                _raise_failure(future, waves.pending[future.key][1], describe)
            if status in ("lost", "pending"):  # its result died with its worker: the scheduler computes it again
                waves.finished.add(future)
        ready = [future for future, status in statuses if status == "finished"]
        for future, (values, seconds) in zip(ready, _gather_within(client, ready, stall_timeout_s, label)):
            first, group = waves.done(future, seconds)
            yield from enumerate(values, start=first)
            meter.advance(sum(map(weight, group)))
        waves.submit(len(ready))


class _Waves:
    """The tasks in flight of one `completed_tasks` call: items drawn from `items` in groups sized from the
    seconds per item measured so far (see `group_size`)."""

    def __init__(self, client: Client, function: Callable[..., Any], items: Iterable[Any],
                 resources: dict[str, int] | None, writes: str | None, kwargs: dict[str, Any]) -> None:
        self.client, self.source, self.resources, self.kwargs = client, iter(items), resources, kwargs
        self.task = functools.partial(run_group, function, writes=writes)
        self.pending: dict[str, tuple[int, list[Any]]] = {}  # future key -> (index of its first item, its items)
        self.finished = as_completed()
        self.submitted = 0
        self.measured_items, self.measured_seconds = 0, 0.0

    def submit(self, count: int) -> None:
        """Up to `count` more tasks, if items are left."""
        size = group_size(self.measured_seconds / self.measured_items if self.measured_items else None)
        groups = list(itertools.islice(batched(self.source, size), count))
        if not groups:
            return
        futures = self.client.map(self.task, groups, retries=2, pure=False, resources=self.resources, **self.kwargs)
        for group, future in zip(groups, futures):
            self.pending[future.key] = (self.submitted, group)
            self.submitted += len(group)
            self.finished.add(future)

    def done(self, future: Any, seconds: float) -> tuple[int, list[Any]]:
        """A finished task's (index of its first item, its items), its seconds measured."""
        first, group = self.pending.pop(future.key)
        self.measured_items += len(group)
        self.measured_seconds += seconds
        return first, group


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


def _raise_failure(future: Any, group: list[Any], describe: Callable[[Any], str]) -> None:
    error = future.exception() if future.status == "error" else None
    index = getattr(error, FAILED_ITEM, None)
    what = describe(group[index]) if index is not None else ", ".join(map(describe, group))
    if isinstance(error, PipelineError):  # bad input the user can act on: keep its message and type
        raise type(error)(f"{what}: {error}") from error
    if isinstance(error, KilledWorker):  # the scheduler gave up on it: each worker that ran it died
        raise workers_lost(what, error.allowed_failures + 1) from error
    if (storage := storage_error(error, what)) is not None:  # a full disk or a read-only location
        raise storage from error
    raise RuntimeError(f"{what} failed after retries: {error!r}" if error else f"{what} was cancelled")
