"""The task loop shared by predict and the blockwise stages: bounded waves over lazy items, progress at once."""

from __future__ import annotations

import functools

from unet_pipeline import cluster, resume
from unet_pipeline.tasks import batched, run_tasks, wave_size


def test_lazy_items_are_drawn_in_bounded_waves_and_results_keep_their_order(tmp_path, dask_cluster, capsys):
    (tmp_path / resume.RECORDS).mkdir()
    record = functools.partial(resume.record_block, tmp_path)  # a task that leaves a file when it runs
    ahead = []

    def items(count: int):
        for index in range(count):
            ahead.append(index - len(list((tmp_path / resume.RECORDS).iterdir())))  # drawn but not yet run
            yield f"item-{index:05d}"

    with cluster.connect(**dask_cluster) as client:
        wave = wave_size(client)
        results = run_tasks(client, record, items(4 * wave), "records", stall_timeout_s=120, total=4 * wave)
    assert results == [None] * (4 * wave) and len(list((tmp_path / resume.RECORDS).iterdir())) == 4 * wave
    assert max(ahead) <= wave < 4 * wave  # never more than one wave submitted ahead of the work done
    assert f"records: 0/{4 * wave} (started)" in capsys.readouterr().err.splitlines()


def test_batched_draws_lists_lazily():
    assert list(batched(iter(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 3)) == []
