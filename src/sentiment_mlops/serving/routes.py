"""The HTTP endpoints. Handlers are `async def` and score inline: the compiled scorer takes
microseconds, less than a hop to a thread pool would cost."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from sentiment_mlops.config import Settings
from sentiment_mlops.serving.auth import require_scope
from sentiment_mlops.serving.metrics import Metrics
from sentiment_mlops.serving.models import ModelPool, ServingModel
from sentiment_mlops.serving.schemas import (
    BatchPrediction,
    BatchPredictRequest,
    Error,
    LoadedModelInfo,
    ModelsResponse,
    Prediction,
    PredictRequest,
    ReloadResponse,
    ReloadResult,
    Status,
)
from sentiment_mlops.serving.tokens import Principal

router = APIRouter()

# Above this many texts scoring moves off the event loop so other requests keep flowing.
INLINE_BATCH_LIMIT = 32

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": Error} for code in (400, 401, 403, 413, 415, 422, 503)
}


async def require_json(request: Request) -> None:
    """Bodies are JSON; anything else is refused before parsing with 415."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise HTTPException(415, "send the body as JSON with Content-Type: application/json")


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _pool(request: Request) -> ModelPool:
    pool: ModelPool = request.app.state.pool
    return pool


def _serving_model(request: Request) -> ServingModel:
    alias = _settings(request).model_alias
    model = _pool(request).get(alias)
    if model is None:
        raise HTTPException(503, f"no '{alias}' model is loaded yet; see GET /ready")
    return model


def _check_texts(texts: Sequence[str], max_chars: int) -> None:
    for i, text in enumerate(texts):
        where = f"texts[{i}]" if len(texts) > 1 else "text"
        if not text.strip():
            raise HTTPException(422, f"{where} is empty or whitespace only")
        if len(text) > max_chars:
            raise HTTPException(
                422, f"{where} has {len(text)} characters; the limit is {max_chars}"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise HTTPException(422, f"{where} is not valid Unicode (lone surrogate)") from exc


async def _score(request: Request, model: ServingModel, texts: list[str]) -> list[Prediction]:
    metrics: Metrics = request.app.state.metrics
    started = time.perf_counter()
    if len(texts) > INLINE_BATCH_LIMIT:
        proba = await asyncio.to_thread(model.scorer.predict_proba, texts)
    else:
        proba = model.scorer.predict_proba(texts)
    elapsed = time.perf_counter() - started
    version = str(model.version)
    variant = model.alias
    metrics.inference_duration.labels(version, variant).observe(elapsed)
    request.state.model_version = model.version
    request.state.variant = variant
    if _settings(request).log_texts:
        request.state.texts = texts
    classes = model.classes
    best = np.argmax(proba, axis=1)
    confidence = metrics.confidence.labels(version, variant)
    length = metrics.input_length.labels(version, variant)
    predictions = []
    for text, row, index in zip(texts, proba.tolist(), best.tolist(), strict=True):
        label = classes[index]
        metrics.predictions.labels(version, variant, label).inc()
        confidence.observe(row[index])
        length.observe(len(text))
        predictions.append(
            Prediction(
                label=label,
                probabilities=dict(zip(classes, row, strict=True)),
                model_version=model.version,
                variant=variant,
                prediction_id=uuid.uuid4().hex,
            )
        )
    return predictions


@router.post(
    "/predict",
    response_model=Prediction,
    responses=ERRORS,
    dependencies=[Depends(require_json)],
    summary="Classify one text",
)
async def predict(
    body: PredictRequest,
    request: Request,
    _: Annotated[Principal, Depends(require_scope("predict"))],
) -> Prediction:
    _check_texts([body.text], _settings(request).max_text_chars)
    model = _serving_model(request)
    return (await _score(request, model, [body.text]))[0]


@router.post(
    "/predict/batch",
    response_model=BatchPrediction,
    responses=ERRORS,
    dependencies=[Depends(require_json)],
    summary="Classify several texts at once",
)
async def predict_batch(
    body: BatchPredictRequest,
    request: Request,
    _: Annotated[Principal, Depends(require_scope("predict"))],
) -> BatchPrediction:
    settings = _settings(request)
    if len(body.texts) > settings.max_batch_size:
        raise HTTPException(
            422, f"{len(body.texts)} texts in one batch; the limit is {settings.max_batch_size}"
        )
    _check_texts(body.texts, settings.max_text_chars)
    model = _serving_model(request)
    return BatchPrediction(predictions=await _score(request, model, body.texts))


@router.get("/models", response_model=ModelsResponse, responses=ERRORS, summary="Loaded models")
async def models(
    request: Request, _: Annotated[Principal, Depends(require_scope("predict"))]
) -> ModelsResponse:
    return ModelsResponse(
        models=[
            LoadedModelInfo(
                alias=m.alias,
                version=m.version,
                sha256=m.sha256,
                run_id=m.run_id,
                scorer=m.scorer.kind,
                classes=m.classes,
                loaded_at=m.loaded_at,
            )
            for m in _pool(request).snapshot().values()
        ]
    )


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses=ERRORS,
    summary="Re-resolve aliases in the registry now and swap in changed versions",
)
async def reload_models(
    request: Request, _: Annotated[Principal, Depends(require_scope("admin"))]
) -> ReloadResponse:
    outcomes = await _pool(request).refresh()
    return ReloadResponse(
        results=[
            ReloadResult(alias=o.alias, version=o.version, result=o.result, error=o.error)
            for o in outcomes
        ]
    )


@router.get("/health", response_model=Status, summary="Liveness: the process answers")
async def health() -> Status:
    return Status(status="ok")


@router.get(
    "/ready",
    response_model=Status,
    responses={503: {"model": Status}},
    summary="Readiness: a verified model is loaded and the server is not shutting down",
)
async def ready(request: Request) -> Response:
    if request.app.state.draining:
        return JSONResponse({"status": "draining", "detail": "shutting down"}, status_code=503)
    alias = _settings(request).model_alias
    model = _pool(request).get(alias)
    if model is None:
        detail = f"no verified '{alias}' model loaded yet"
        return JSONResponse({"status": "not ready", "detail": detail}, status_code=503)
    return JSONResponse({"status": "ready", "detail": f"{alias} version {model.version}"})


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.exposition()
    return Response(body, media_type=content_type)
