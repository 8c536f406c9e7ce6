"""Running the API under uvicorn: process environment, worker count, a usage hint."""

from __future__ import annotations

import os
import shlex
import shutil
from typing import Any

import uvicorn

from sentiment_mlops.config import Settings
from sentiment_mlops.runtime import configure_process
from sentiment_mlops.serving.logs import configure_logging
from sentiment_mlops.serving.metrics import MULTIPROC_ENV

APP_FACTORY = "sentiment_mlops.serving.app:create_app"
EXAMPLE_TEXT = "The crew was friendly and the flight was great"


def prepare_environment(settings: Settings) -> None:
    """The process environment for the workers, and a fresh shared metrics folder when there
    are several. Workers are new processes that inherit the environment set here."""
    configure_process()
    if settings.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        folder = (settings.var_dir / "prometheus-multiproc").resolve()
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ[MULTIPROC_ENV] = str(folder)


def usage_hint(settings: Settings) -> str:
    """A curl command that works as pasted, with a fresh token when the server signs them."""
    from sentiment_mlops.serving.tokens import AuthConfigError, Authenticator

    host = "127.0.0.1" if settings.host in {"0.0.0.0", "::", ""} else settings.host
    url = f"http://{host}:{settings.port}"
    body = shlex.quote(f'{{"text": "{EXAMPLE_TEXT}"}}')
    command = f"curl -s {url}/predict -H 'Content-Type: application/json' -d {body}"
    lines = [f"Serving on {url} (docs: {url}/docs, metrics: {url}/metrics)"]
    if settings.auth_disabled:
        return "\n".join([*lines, "Try:", f"  {command}"])
    try:
        token = Authenticator.from_settings(settings).mint(
            "local-user", ["predict"], settings.token_ttl_seconds
        )
    except (AuthConfigError, ValueError) as exc:
        lines.append(f"(no token printed: {exc}; mint one with `sentiment token create`)")
        return "\n".join(lines)
    minutes = settings.token_ttl_seconds // 60
    lines += [
        f"Try (token valid {minutes} min; more with `sentiment token create --subject NAME`):",
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
    """The keyword arguments `sentiment serve` gives `uvicorn.run` (and `uvicorn.Config`)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "loop": event_loop(settings.workers),
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 30,
        "timeout_worker_healthcheck": settings.worker_healthcheck_seconds,
    }


def run_server(settings: Settings) -> None:
    """Blocks until the server stops; uvicorn finishes in-flight requests on SIGTERM.

    The parent process logs as JSON too, so worker deaths and restarts are on record.
    """
    configure_logging()
    uvicorn.run(APP_FACTORY, factory=True, **uvicorn_options(settings))
