"""The FastAPI application: `create_app(settings, source)` is the one way to build it.

`sentiment serve` runs it through uvicorn's factory mode (`sentiment_mlops.serving.app:create_app`)
so importing this module builds nothing; keys are loaded when the app starts, and models by
the pool in the background from then on, so the server listens even while the registry is
down (`/health` answers, `/ready` says why it is not ready yet). The prediction log's writer
starts with the app too, and prepares its tables in the background: a log database that is
down holds up no request. At shutdown it writes what is still queued before the worker exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
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
from sentiment_mlops.serving import auth, feedback, routes
from sentiment_mlops.serving.clients import ClientStore
from sentiment_mlops.serving.deps import Services
from sentiment_mlops.serving.docs import install_docs
from sentiment_mlops.serving.entity_features import OnlineFeatures
from sentiment_mlops.serving.fast_path import FastPredict
from sentiment_mlops.serving.loader import load_in_child
from sentiment_mlops.serving.logs import configure_logging
from sentiment_mlops.serving.metrics import Metrics, mark_worker_dead, multiprocess_dir
from sentiment_mlops.serving.middleware import RequestContextMiddleware
from sentiment_mlops.serving.models import (
    Loader,
    ModelPool,
    ModelSource,
    NoModelLoaded,
    load_here,
)
from sentiment_mlops.serving.prediction_log import PredictionLog
from sentiment_mlops.serving.predictor import PredictionSink, Predictor
from sentiment_mlops.serving.routing import read_routing
from sentiment_mlops.serving.throttle import TokenThrottle
from sentiment_mlops.serving.tokens import Authenticator

log = logging.getLogger("sentiment_mlops.serving")


def _default_source(settings: Settings) -> ModelSource:
    from sentiment_mlops.registry import Registry

    return Registry(settings)


def _drain_on_sigterm(services: Services) -> None:
    """On SIGTERM turn /ready to 503 first, then after the grace period let uvicorn stop.

    Load balancers stop sending traffic once readiness fails; uvicorn then finishes the
    requests in flight. Only possible in the main thread (where uvicorn runs).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    grace_seconds = services.settings.shutdown_grace_seconds

    def handler(signum: int, frame: FrameType | None) -> None:
        if services.draining:
            return
        services.draining = True
        log.info("SIGTERM: draining", extra={"grace_seconds": grace_seconds})
        if callable(previous):
            loop.call_soon_threadsafe(loop.call_later, grace_seconds, previous, signum, frame)

    signal.signal(signal.SIGTERM, handler)


def _services(
    settings: Settings,
    source: ModelSource,
    swap_loader: Loader,
    metrics: Metrics,
    sink: PredictionSink | None,
) -> Services:
    """Resolve keys and clients, and make the (still empty) model pool."""
    authenticator = Authenticator.from_settings(settings)
    if authenticator.disabled:
        log.warning("authentication is DISABLED (SENTIMENT_AUTH_DISABLED); local use only")
    elif authenticator.is_dev_secret:
        log.warning(
            "signing tokens with a generated development secret; set SENTIMENT_JWT_SECRET",
            extra={"secret_file": str(settings.dev_secret_file())},
        )
    if settings.subject_key is None:
        log.warning(
            "hashing users for the prediction log and the feature store with a generated key; "
            "set SENTIMENT_SUBJECT_KEY, the same in every replica",
            extra={"key_file": str(settings.subject_key_file())},
        )
    features = OnlineFeatures.from_settings(settings, metrics)
    pool = ModelPool(
        source,
        functools.partial(read_routing, settings),
        metrics,
        timeout_seconds=settings.registry_timeout_seconds,
        load_timeout_seconds=settings.model_load_timeout_seconds,
        swap_loader=swap_loader,
        before_serving=lambda scorer: features.prepare(scorer.entity_features),
    )
    prediction_log = PredictionLog.from_settings(settings, metrics)
    return Services(
        settings=settings,
        metrics=metrics,
        pool=pool,
        predictor=Predictor(
            metrics,
            sink or prediction_log,
            features,
            shadow_max_in_flight=settings.shadow_max_in_flight,
        ),
        prediction_log=prediction_log,
        authenticator=authenticator,
        clients=ClientStore.load(settings.clients_file()),
        throttle=TokenThrottle.from_settings(settings),
    )


def create_app(
    settings: Settings | None = None,
    source: ModelSource | None = None,
    swap_loader: Loader | None = None,
    prediction_sink: PredictionSink | None = None,
) -> FastAPI:
    """Build the app; `source` defaults to the MLflow registry named by `settings`.

    `swap_loader` (how a version is loaded while another serves) defaults to a child process
    per load for that registry (serving/loader.py), and to a thread for a `source` given by
    the caller (tests' stand-ins need not pickle). Every prediction, primary and shadow, goes
    to the prediction log (`SENTIMENT_DATABASE_URL`), or to `prediction_sink` instead when one
    is given (tests that watch what the predictor records); feedback and `/ready` always
    use the prediction log.
    """
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model_source = source or _default_source(settings)
        # After the registry's import: `import mlflow` gives MLflow's loggers handlers of its
        # own, which this replaces with ours.
        configure_logging()
        swaps = swap_loader or (load_here if source is not None else load_in_child)
        services = _services(settings, model_source, swaps, metrics, prediction_sink)
        app.state.services = services
        services.prediction_log.start()
        # The first load too runs in the background, and startup waits for it only a bounded
        # time: waiting without bound kept the server from listening for as long as the
        # registry did not answer, and not waiting at all let a worker accept requests it could
        # only refuse (503) while a sibling worker had its model.
        poller = asyncio.create_task(services.pool.run(settings.reload_interval_seconds))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                services.pool.first_round.wait(), settings.startup_model_wait_seconds
            )
        _drain_on_sigterm(services)
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await services.predictor.close()
            # bounded by SENTIMENT_PREDICTION_LOG_FLUSH_SECONDS; what is left is counted
            await asyncio.to_thread(services.prediction_log.close)
            services.throttle.close()
            mark_worker_dead(os.getpid(), multiprocess_dir())

    app = FastAPI(
        title="sentiment-mlops",
        version=__version__,
        description="Sentiment classification with versioned models. "
        "Get a token from POST /token (OAuth2 client credentials) and send it as a Bearer token.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # FastAPI's OpenTelemetry hooks, off: the server's telemetry is its Prometheus metrics
        # and JSON logs, and asking OpenTelemetry on every request whether a provider is set
        # cost 3% of a prediction.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.include_router(routes.router)
    app.include_router(feedback.router)
    app.include_router(auth.router)
    install_docs(app)
    # Added first, so it runs inside RequestContextMiddleware (the last added is outermost).
    app.add_middleware(FastPredict)
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

    @app.exception_handler(NoModelLoaded)
    async def no_model(request: Request, exc: NoModelLoaded) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)

    return app
