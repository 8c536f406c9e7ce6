"""The FastAPI application: `create_app(settings)` for tests and `sentiment serve`, and a
module-level `app` so `uvicorn sentiment_mlops.serving.app:app` works too."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sentiment_mlops import __version__
from sentiment_mlops.config import Settings
from sentiment_mlops.serving import auth, routes
from sentiment_mlops.serving.docs import install_docs
from sentiment_mlops.serving.logs import configure_logging
from sentiment_mlops.serving.metrics import Metrics, mark_worker_dead
from sentiment_mlops.serving.middleware import RequestContextMiddleware
from sentiment_mlops.serving.models import ModelPool, ModelSource

log = logging.getLogger("sentiment_mlops.serving")


def _default_source(settings: Settings) -> ModelSource:
    from sentiment_mlops.registry import Registry

    return Registry(settings)


def _drain_on_sigterm(app: FastAPI, grace_seconds: float) -> None:
    """On SIGTERM turn /ready to 503 first, then after the grace period let uvicorn stop.

    Load balancers stop sending traffic once readiness fails; uvicorn then finishes the
    requests in flight. Only possible in the main thread (where uvicorn runs).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        if app.state.draining:
            return
        app.state.draining = True
        log.info("SIGTERM: draining", extra={"grace_seconds": grace_seconds})
        if callable(previous):
            loop.call_soon_threadsafe(loop.call_later, grace_seconds, previous, signum, frame)

    signal.signal(signal.SIGTERM, handler)


def create_app(settings: Settings | None = None, source: ModelSource | None = None) -> FastAPI:
    """Build the app; models and keys are loaded when it starts, not when it is built."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging()
        authenticator = auth.Authenticator.from_settings(settings)
        if authenticator.disabled:
            log.warning("authentication is DISABLED (SENTIMENT_AUTH_DISABLED); local use only")
        elif authenticator.is_dev_secret:
            log.warning(
                "signing tokens with a generated development secret; set SENTIMENT_JWT_SECRET",
                extra={"secret_file": str(settings.dev_secret_file())},
            )
        app.state.auth = authenticator
        app.state.clients = auth.ClientStore.load(settings.clients_file())
        pool = ModelPool(source or _default_source(settings), [settings.model_alias], metrics)
        app.state.pool = pool
        for outcome in await pool.refresh():
            if outcome.result != "loaded":
                log.warning(
                    "no model to serve yet",
                    extra={
                        "alias": outcome.alias,
                        "result": outcome.result,
                        "error": outcome.error,
                    },
                )
        poller = asyncio.create_task(pool.run(settings.reload_interval_seconds))
        _drain_on_sigterm(app, settings.shutdown_grace_seconds)
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            mark_worker_dead()

    app = FastAPI(
        title="sentiment-mlops",
        version=__version__,
        description="Sentiment classification with versioned models. "
        "Get a token from POST /token (OAuth2 client credentials) and send it as a Bearer token.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.draining = False
    app.include_router(routes.router)
    app.include_router(auth.router)
    install_docs(app)
    app.add_middleware(
        RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """One readable message, and never the submitted values echoed back (privacy, and
        values such as lone surrogates cannot even be encoded as JSON)."""
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": detail or "invalid request", "errors": errors}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)

    return app


app = create_app()
