"""Where the search runs: a Dask cluster at a scheduler address, or one started on this machine.

The same search code runs on both. The local cluster has one single-threaded worker process
per core: the trials are CPU-bound Python and sklearn (the GIL keeps threads from running
them in parallel), and BLAS stays at one thread per process (runtime.PROCESS_ENV, inherited
by the worker processes; `work.score_fold` limits it again for workers started elsewhere).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sentiment_mlops.tuning.search import TuneError

if TYPE_CHECKING:
    from distributed import Client

# How long to wait for a scheduler to answer, and for a cluster to have its first worker.
CONNECT_SECONDS = 5
WORKER_WAIT_SECONDS = 60


@dataclass(frozen=True)
class Cluster:
    """A connected client and what to tell the user about it."""

    client: Client
    scheduler: str
    workers: int
    dashboard: str | None  # None: no dashboard to show (none, or bokeh missing there)
    local: bool

    def describe(self) -> str:
        kind = "local cluster" if self.local else "cluster"
        where = f"{kind}: {self.workers} workers, scheduler {self.scheduler}"
        if self.dashboard is None:
            return (
                f"{where}; Dask dashboard unavailable (it needs bokeh where the scheduler "
                "runs: pip install 'bokeh>=3.1')"
            )
        return f"{where}; Dask dashboard {self.dashboard}"


def local_worker_count() -> int:
    """The cores this process may run on (the CPU affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def connect(scheduler: str | None = None, workers: int | None = None) -> Iterator[Cluster]:
    """A client of the scheduler at `scheduler` (`tcp://host:8786`), or of a local cluster
    of `workers` processes (default: one per core); closed on exit, local cluster included."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if workers is not None:
            raise TuneError("--workers sizes a local cluster; a scheduler has its own workers")
        try:
            client = Client(scheduler, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise TuneError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
        with client:
            yield _described(client, scheduler, local=False)
        return
    if workers is not None and workers < 1:
        raise TuneError(f"--workers must be at least 1, not {workers}")
    with (
        LocalCluster(
            n_workers=workers or local_worker_count(),
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            # Cancelling a search makes each worker warn about every task it dropped.
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield _described(client, cluster.scheduler_address, local=True)


def _described(client: Client, scheduler: str, *, local: bool) -> Cluster:
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
    except TimeoutError as exc:
        raise TuneError(
            f"the Dask scheduler at {scheduler} has no worker after {WORKER_WAIT_SECONDS} s; "
            f"start some with `dask worker {scheduler}`"
        ) from exc
    # The dashboard page needs bokeh where the scheduler runs (the project's image has none).
    has_page = "dashboard" in client.scheduler_info().get("services", {}) and bool(
        client.run_on_scheduler(lambda: importlib.util.find_spec("bokeh") is not None)
    )
    return Cluster(
        client=client,
        scheduler=scheduler,
        workers=len(client.nthreads()),
        dashboard=client.dashboard_link if has_page else None,
        local=local,
    )
