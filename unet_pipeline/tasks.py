"""Run one function over many work items on a Dask cluster, with progress and a stall timeout."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from distributed import Client, as_completed

from . import progress
from .errors import PipelineError, storage_error


def run_tasks(client: Client, function: Callable[..., Any], items: Sequence[Any], label: str,
              stall_timeout_s: float, describe: Callable[[Any], str] = str,
              weight: Callable[[Any], int] = lambda item: 1, resources: dict[str, int] | None = None,
              **kwargs: Any) -> list[Any]:
    """`function(item, **kwargs)` for every item on the cluster; the results in the order of `items`.

    Each task is retried twice (e.g. when its worker dies). Stops with an error
    naming the item (through `describe`) when one fails after its retries, or
    when nothing finishes for `stall_timeout_s` seconds. Progress counts
    `weight(item)` per finished item.
    """
    futures = client.map(function, items, retries=2, pure=False, resources=resources, **kwargs)
    item_of = {future.key: item for future, item in zip(futures, items)}
    meter = progress.Meter(label, sum(map(weight, items)))
    finished = as_completed(futures)
    last_progress = time.monotonic()
    while not finished.is_empty():
        ready = finished.next_batch(block=False)
        if not ready:
            if time.monotonic() - last_progress > stall_timeout_s:
                raise TimeoutError(f"{label}: nothing finished within {stall_timeout_s} s ({finished.count()} "
                                   f"pending, {len(client.scheduler_info()['workers'])} workers): is the cluster alive?")
            time.sleep(0.05)
            continue
        last_progress = time.monotonic()
        for future in ready:
            if future.status != "finished":
                error = future.exception()
                if isinstance(error, PipelineError):  # bad input the user can act on: keep its message and type
                    raise type(error)(f"{describe(item_of[future.key])}: {error}") from error
                if (storage := storage_error(error, describe(item_of[future.key]))) is not None:  # a full disk or a read-only location
                    raise storage from error
                raise RuntimeError(f"{describe(item_of[future.key])} failed after retries: {error!r}")
            meter.advance(weight(item_of[future.key]))
    return client.gather(futures)
