"""The Dask cluster a stage runs on, from the config's `cluster` block.

`local`: a LocalCluster of worker processes on this machine;
`address`: an existing scheduler (e.g. one started on an HPC cluster).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from distributed import Client, LocalCluster


@contextlib.contextmanager
def connect(kind: str, workers: int, threads_per_worker: int, address: str | None = None) -> Iterator[Client]:
    """A client on the configured cluster; a local cluster is shut down on exit."""
    if kind == "address":
        if not address:
            raise ValueError("cluster.kind is 'address' but cluster.address is empty")
        with Client(address) as client:
            _announce(client)
            yield client
        return
    if kind != "local":
        raise ValueError(f"unknown cluster.kind {kind!r}: expected 'local' or 'address'")
    with LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                      dashboard_address=":0") as local, Client(local) as client:
        _announce(client)
        yield client


def _announce(client: Client) -> None:
    print(f"dask scheduler {client.scheduler.address}, dashboard {client.dashboard_link}", file=sys.stderr,
          flush=True)

