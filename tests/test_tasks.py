"""The task loop shared by predict and the blockwise stages: bounded waves over lazy items, quick items grouped
into tasks of about `TASK_TARGET_S`, progress at once, failures named by item."""

from __future__ import annotations

import functools
import os
import signal
import threading

import dask
import pytest
from distributed import Client, LocalCluster, get_worker

from unet_pipeline.core.errors import InputError, WorkersLost
from unet_pipeline.distributed import cluster, records, tasks
from unet_pipeline.distributed.tasks import GROUP_MAX, TASK_TARGET_S, batched, group_size, run_tasks, wave_size


def test_lazy_items_are_drawn_in_bounded_waves_and_results_keep_their_order(tmp_path, dask_cluster, capsys,
                                                                             monkeypatch):
    monkeypatch.setattr(tasks, "GROUP_MAX", 1)  # one item per task: a wave of tasks is a wave of items
    (tmp_path / records.RECORDS).mkdir()
    record = functools.partial(records.record_block, tmp_path)  # a task that leaves a record when it runs
    ahead = []

    def items(count: int):
        for index in range(count):
            ahead.append(index - len(records.finished_blocks(tmp_path)))  # drawn but not yet run
            yield f"item-{index:05d}"

    with cluster.connect(**dask_cluster) as client:
        wave = wave_size(client)
        results = run_tasks(client, record, items(4 * wave), "records", stall_timeout_s=120, total=4 * wave)
    assert results == [None] * (4 * wave) and len(records.finished_blocks(tmp_path)) == 4 * wave
    assert max(ahead) <= wave < 4 * wave  # never more than one wave submitted ahead of the work done
    assert f"records: 0/{4 * wave} (started)" in capsys.readouterr().err.splitlines()


def current_task(item: int) -> tuple[int, str]:
    return item, get_worker().get_current_task()


def test_quick_items_share_tasks_and_keep_their_order(dask_cluster):
    with cluster.connect(**dask_cluster) as client:
        count = 2 * wave_size(client) * GROUP_MAX
        results = run_tasks(client, current_task, iter(range(count)), "quick", stall_timeout_s=120)
    assert [item for item, _ in results] == list(range(count))
    keys = [key for _, key in results]
    assert len(set(keys)) < count / 4  # the first wave goes one item per task, later ones grouped
    assert keys[-2] == keys[-1]


def fail_at(item: int, bad: int) -> int:
    if item == bad:
        raise InputError("this item is bad")
    return item


def test_a_failing_item_in_a_group_is_named_alone(dask_cluster):
    with cluster.connect(**dask_cluster) as client:
        bad = 2 * wave_size(client) * GROUP_MAX - 5  # far past the first wave: its task holds several items
        with pytest.raises(InputError, match=rf"^item {bad}: this item is bad$"):
            run_tasks(client, fail_at, iter(range(bad + 10)), "failing", stall_timeout_s=120,
                      describe=lambda item: f"item {item}", bad=bad)


def test_tasks_are_sized_from_the_measured_seconds_per_item():
    assert group_size(None) == 1  # nothing measured yet
    assert group_size(TASK_TARGET_S) == 1 and group_size(10 * TASK_TARGET_S) == 1
    assert group_size(TASK_TARGET_S / 10) == 10
    assert group_size(0.0) == GROUP_MAX


def test_batched_draws_lists_lazily():
    assert list(batched(iter(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 3)) == []


def kill_own_worker(item: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return item


def test_a_task_that_kills_every_worker_it_runs_on_is_named_with_a_pipeline_error():
    """A task that takes its worker down every time (an out-of-memory kill, say) ends the run with the one-line
    error of the command line (exit 2), naming the item, not a KilledWorker traceback."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as local, \
            Client(local) as client:
        with pytest.raises(WorkersLost, match=r"^item 3: the Dask worker running it died every time it ran \(2 "
                                              r"tries: killed, or out of memory\?\)"):
            run_tasks(client, kill_own_worker, [3], "doomed", stall_timeout_s=120, describe=lambda i: f"item {i}")


def test_the_stall_clock_starts_when_the_first_worker_is_up():
    """Workers that take longer to start than the stall timeout (a batch queue, a slow import) are no stall;
    once a worker is up, silence is."""
    with LocalCluster(n_workers=0, processes=True, dashboard_address=":0") as local, Client(local) as client:
        threading.Timer(4, local.scale, (1,)).start()  # twice the stall timeout
        assert run_tasks(client, fail_at, [1, 2], "late workers", stall_timeout_s=2, bad=0) == [1, 2]
