"""Process-wide settings: the environment numerical libraries and MLflow read, and exit
(SIGTERM as an exception, a faster end).

`configure_process()` is called at each entry point, before numpy or mlflow are imported:
the `sentiment` command (a callback that runs before any subcommand), the server's
`prepare_environment` (uvicorn's worker processes inherit the environment), and the test
suite's conftest. No library module sets the environment, on import or otherwise.
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

PROCESS_ENV = {
    # BLAS and OpenMP start one thread per core. On 2 shared cores that made fitting the
    # logistic regression 3-6x slower (SST-2: 7-24 s instead of 3-4 s; a small grid search:
    # 80 s instead of 13.7 s). OpenBLAS reads its variable when numpy is first imported,
    # OpenMP when its runtime starts: set later, they change nothing.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    # MLflow's telemetry does DNS lookups and HTTPS requests and writes an installation id
    # under ~/.config/mlflow.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # Synchronous logging, so that Registry.register's undo sees every write it made.
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    # No tqdm bars on stderr for artifact uploads and downloads.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def configure_process() -> None:
    """Give each variable of `PROCESS_ENV` its value unless it is already set; idempotent.

    A value the user exported wins (e.g. `OPENBLAS_NUM_THREADS=4` on a bigger machine).

    When the variables are read decides where this must be called. OpenBLAS and OpenMP: at
    library load, i.e. before the first `import numpy` (or sklearn). MLflow 3.17 (read in
    its source): `import mlflow` itself calls `set_telemetry_client()`, which checks
    `MLFLOW_DISABLE_TELEMETRY` and, unless it is true, creates the telemetry client and
    writes the installation id; every tracked API call checks it again before queueing an
    event, the first of which fetches the telemetry config over the network and starts the
    sender threads. `MLFLOW_ENABLE_ASYNC_LOGGING` and `MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`
    are read on each logging or artifact call. So the call has to come before `import
    mlflow` too, which is why importing this module costs nothing and imports nothing heavy.
    """
    for name, value in PROCESS_ENV.items():
        os.environ.setdefault(name, value)


def skip_collection_at_exit() -> None:
    """Let a short-lived process exit without Python's final garbage collections.

    After `sentiment train` the collector tracks ~400k objects (the modules of mlflow,
    SQLAlchemy, sklearn and pandas, and the data); the full collections Python runs while
    shutting down took ~1.3 s of the command. `gc.freeze()` at exit moves them all to the
    permanent generation, which is never collected: objects are still freed by reference
    counting as modules are torn down, atexit handlers still run, only garbage held in
    reference cycles is left for the operating system to reclaim. Idempotent.
    """
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


@contextmanager
def restored_environment(*names: str) -> Iterator[None]:
    """Put the named environment variables back as they were when the block ends, set or
    unset, whatever the block (or a library it imports) did to them."""
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Terminated(SystemExit):
    """SIGTERM, raised by `sigterm_raises` with exit status 143 (128 + 15), what a shell
    reports for a process the signal ended."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises `Terminated` in the main thread instead of
    ending the process at once.

    Left to its default, SIGTERM (a timeout, `kill`, a container stopping) skipped every
    `finally` and `with` exit: each `sentiment train` so ended left its report files in the
    temporary folder (216 MB with 5,000 classes), and a registration its half-logged run. As
    an exception it unwinds like Ctrl-C: temporary folders are removed, `Registry.register`
    undoes what it wrote. Not for the server, whose SIGTERM uvicorn handles; outside the
    main thread (where no signal arrives) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
