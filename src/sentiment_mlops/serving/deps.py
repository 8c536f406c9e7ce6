"""Typed FastAPI dependencies: how handlers get the settings, models, metrics and auth.

`create_app` keeps one `Services` object on the app, built when the app starts; this module is
the only code that reads it from `app.state`, so a handler states what it needs with the
`Annotated` aliases below and type checkers see real types instead of untyped attributes.
Every dependency is `async def`: FastAPI runs a plain `def` dependency in its thread pool,
which measured at half the throughput on /predict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from sentiment_mlops.config import Settings
from sentiment_mlops.serving.clients import ClientStore
from sentiment_mlops.serving.metrics import Metrics
from sentiment_mlops.serving.middleware import AccessRecord
from sentiment_mlops.serving.models import ModelPool
from sentiment_mlops.serving.prediction_log import PredictionLog
from sentiment_mlops.serving.predictor import Predictor
from sentiment_mlops.serving.throttle import TokenThrottle
from sentiment_mlops.serving.tokens import Authenticator


@dataclass
class Services:
    """What the handlers of one app share; `draining` turns true on SIGTERM."""

    settings: Settings
    metrics: Metrics
    pool: ModelPool
    predictor: Predictor
    prediction_log: PredictionLog
    authenticator: Authenticator
    clients: ClientStore
    throttle: TokenThrottle
    draining: bool = False


async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:  # only before the lifespan has run, e.g. an app never started
        raise HTTPException(503, "the server is starting; try again shortly")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_pool(services: ServicesDep) -> ModelPool:
    return services.pool


async def get_metrics(services: ServicesDep) -> Metrics:
    return services.metrics


async def get_predictor(services: ServicesDep) -> Predictor:
    return services.predictor


async def get_prediction_log(services: ServicesDep) -> PredictionLog:
    return services.prediction_log


async def get_authenticator(services: ServicesDep) -> Authenticator:
    return services.authenticator


async def get_clients(services: ServicesDep) -> ClientStore:
    return services.clients


async def get_throttle(services: ServicesDep) -> TokenThrottle:
    return services.throttle


async def get_access_record(request: Request) -> AccessRecord:
    return AccessRecord.of(request.scope)


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[ModelPool, Depends(get_pool)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
PredictionLogDep = Annotated[PredictionLog, Depends(get_prediction_log)]
AuthenticatorDep = Annotated[Authenticator, Depends(get_authenticator)]
ClientsDep = Annotated[ClientStore, Depends(get_clients)]
ThrottleDep = Annotated[TokenThrottle, Depends(get_throttle)]
AccessRecordDep = Annotated[AccessRecord, Depends(get_access_record)]
