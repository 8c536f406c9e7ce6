"""Running the API under uvicorn: process environment, worker count, a usage hint."""

from __future__ import annotations

import os
import shlex
import shutil

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
    """A curl command that works as pasted: with a fresh token only when the server signs with
    the generated development secret (local use). With a real key configured no token is
    printed, since stderr may end up in shared logs and a token there works for anyone."""
    from sentiment_mlops.serving.tokens import AuthConfigError, Authenticator

    host = "127.0.0.1" if settings.host in {"0.0.0.0", "::", ""} else settings.host
    url = f"http://{host}:{settings.port}"
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


def run_server(settings: Settings) -> None:
    """Blocks until the server stops; uvicorn finishes in-flight requests on SIGTERM.

    The parent process logs as JSON too, so worker deaths and restarts are on record.
    """
    configure_logging()
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        timeout_worker_healthcheck=settings.worker_healthcheck_seconds,
    )
