"""Running the API under uvicorn: process environment, metrics folder, connection limits,
the supervisor of several workers, a usage hint."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from sentiment_mlops.config import Settings
from sentiment_mlops.runtime import configure_process, restored_environment
from sentiment_mlops.serving.connections import ConnectionLimits, ServingConfig, connection_limits
from sentiment_mlops.serving.logs import configure_logging
from sentiment_mlops.serving.metrics import (
    MULTIPROC_ENV,
    UNAVAILABLE_ENV,
    clear_folder,
    folder_problem,
    make_unavailable,
    share_through,
)
from sentiment_mlops.serving.supervisor import Supervisor

log = logging.getLogger("sentiment_mlops.serving.server")

APP_FACTORY = "sentiment_mlops.serving.app:create_app"
EXAMPLE_TEXT = "The crew was friendly and the flight was great"
MEMORY_FOLDER = Path("/dev/shm")


def prepare_environment(settings: Settings) -> None:
    """The process environment the workers inherit (they are new processes)."""
    configure_process()


@contextmanager
def metrics_folder(settings: Settings) -> Iterator[Path | None]:
    """The folder the workers share their metrics through, emptied and checked for room; None
    when there is none (one worker keeps its metrics in memory) or it has no room.

    `PROMETHEUS_MULTIPROC_DIR` if the operator set it; else, for several workers, a folder of
    ours in memory (`/dev/shm`), or under `var_dir` where there is none, removed on exit.
    Without room, metrics are made unavailable (logged; /metrics says why), since a write
    into prometheus_client's mapped files on a full disk kills the worker with SIGBUS.
    """
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        folder, ours = Path(configured), False
    elif settings.workers > 1:
        folder, ours = _own_folder(settings), True
    else:
        yield None
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        clear_folder(folder)
        problem = folder_problem(folder, settings.workers)
    except OSError as exc:
        problem = f"{folder}: {exc}"
    try:
        with restored_environment(MULTIPROC_ENV, UNAVAILABLE_ENV):
            if problem is None:
                share_through(folder)
                log.info("metrics shared through a folder", extra={"folder": str(folder)})
                yield folder
            else:
                make_unavailable(problem)
                log.error("metrics unavailable", extra={"reason": problem})
                yield None
    finally:
        if ours:
            shutil.rmtree(folder, ignore_errors=True)


def _own_folder(settings: Settings) -> Path:
    if MEMORY_FOLDER.is_dir() and os.access(MEMORY_FOLDER, os.W_OK | os.X_OK):
        return MEMORY_FOLDER / f"sentiment-mlops-{os.getpid()}"
    return (settings.var_dir / "prometheus-multiproc").resolve()


def usage_hint(settings: Settings) -> str:
    """A curl command that works as pasted: with a fresh token only when the server signs with
    the generated development secret (local use). With a real key configured no token is
    printed, since stderr may end up in shared logs and a token there works for anyone."""
    from sentiment_mlops.serving.tokens import AuthConfigError, Authenticator

    url = settings.local_url()
    body = shlex.quote(f'{{"text": "{EXAMPLE_TEXT}"}}')
    command = f"curl -s {url}/predict -H 'Content-Type: application/json' -d {body}"
    lines = [f"Serving on {url} (docs: {url}/docs, metrics: {url}/metrics)"]
    if settings.auth_disabled:
        return "\n".join([*lines, "Try:", f"  {command}"])
    try:
        authenticator = Authenticator.from_settings(settings)
        if not authenticator.is_dev_secret:
            lines += [
                "A real signing key is configured, so no token is printed: mint tokens with "
                "`sentiment token create --subject NAME` or get one from POST /token. Try:",
                f"  {command} -H 'Authorization: Bearer <token>'",
            ]
            return "\n".join(lines)
        token = authenticator.mint("local-user", ["predict"], settings.token_ttl_seconds)
    except (AuthConfigError, ValueError) as exc:
        lines.append(f"(no token printed: {exc}; mint one with `sentiment token create`)")
        return "\n".join(lines)
    minutes = settings.token_ttl_seconds // 60
    lines += [
        f"Try (a token signed with the development secret, valid {minutes} min; "
        "more with `sentiment token create --subject NAME`):",
        f"  {command} -H 'Authorization: Bearer {token}'",
    ]
    return "\n".join(lines)


def event_loop(workers: int) -> str:
    """uvicorn's event loop: asyncio's for one worker, uvloop's for several.

    Since libuv 1.45 (uvloop 0.23 bundles 1.52) uvloop accepts one connection per turn of the
    loop, and under load one turn runs every request that is ready: ~30 ms at 64 connections.
    The 64th of 64 keep-alive connections opened at once was accepted 1.5-2.2 s after it
    connected, so its first request took that long (/predict p99 0.5-1.3 s under wrk -c64 while
    no request took more than 0.12 s once accepted). asyncio's loop accepts every queued
    connection in one turn: p99 70-120 ms, throughput the same within the noise.
    Several workers share one listening socket, and there that greed is harmful: one worker
    took nearly all of wrk's connections (2 workers, c=32: 700 req/s against uvloop's 1,975);
    uvloop's one accept per turn spreads them over the workers.
    """
    return "asyncio" if workers == 1 else "uvloop"


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments `sentiment serve` gives uvicorn's `Config` (the serving benchmark
    runs its bare constant app with the same)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "loop": event_loop(settings.workers),
        "log_config": None,
        "access_log": False,
        "timeout_keep_alive": settings.keep_alive_seconds,
        "timeout_graceful_shutdown": 30,
        "timeout_worker_healthcheck": settings.worker_healthcheck_seconds,
    }


def build_config(settings: Settings, limits: ConnectionLimits) -> ServingConfig:
    """uvicorn's configuration for `sentiment serve`: the app built by its factory in each
    worker, our connection limits, and a patient worker healthcheck."""
    return ServingConfig(APP_FACTORY, limits=limits, factory=True, **uvicorn_options(settings))


def run_server(settings: Settings) -> None:
    """Blocks until the server stops; uvicorn finishes in-flight requests on SIGTERM.

    What `uvicorn.run` does, with our config, and our `Supervisor` for several workers. The
    parent process logs as JSON too, so worker deaths and restarts are on record.
    """
    configure_logging()
    config = build_config(settings, connection_limits(settings))
    with metrics_folder(settings) as folder:
        if config.workers > 1:
            Supervisor(config, [config.bind_socket()], folder).run()
            return
        server = uvicorn.Server(config)
        with suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C once it has stopped
            server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
