"""The HTTP endpoints: each validates its input, asks the pool which model answers (routing),
hands the texts to the predictor and returns. What they need arrives as typed dependencies
(`deps.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from sentiment_mlops.config import Settings
from sentiment_mlops.serving.auth import require_scope
from sentiment_mlops.serving.deps import (
    AccessRecordDep,
    MetricsDep,
    PoolDep,
    PredictorDep,
    ServicesDep,
    SettingsDep,
)
from sentiment_mlops.serving.entity_features import EntityKeys
from sentiment_mlops.serving.metrics import MetricsUnavailable
from sentiment_mlops.serving.middleware import AccessRecord
from sentiment_mlops.serving.models import ModelPool, NoModelLoaded, Route, UnknownVariant
from sentiment_mlops.serving.predictor import Answer, Predictor
from sentiment_mlops.serving.schemas import (
    BatchPrediction,
    BatchPredictRequest,
    EntityFeatures,
    Error,
    LoadedModelInfo,
    ModelsResponse,
    Prediction,
    PredictRequest,
    Readiness,
    ReloadResponse,
    ReloadResult,
    RoutingResult,
    Status,
)
from sentiment_mlops.serving.tokens import Principal

router = APIRouter()

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": Error} for code in (400, 401, 403, 413, 415, 422, 503)
}


def is_json(content_type: str) -> bool:
    """Whether a Content-Type header's media type is application/json (parameters aside)."""
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


async def require_json(request: Request) -> None:
    """Bodies are JSON; anything else is refused before parsing with 415."""
    if not is_json(request.headers.get("content-type", "")):
        raise HTTPException(415, "send the body as JSON with Content-Type: application/json")


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


@dataclass(frozen=True)
class Plan:
    """A checked prediction request: its texts, who asked, and the route that answers it."""

    texts: list[str]
    subject: str | None
    keys: EntityKeys
    route: Route


def plan(
    body: PredictRequest | BatchPredictRequest,
    principal: Principal,
    settings: Settings,
    pool: ModelPool,
) -> Plan:
    """Every check of a validated prediction request, and its route; no side effect, so a
    caller may drop a plan that raised (serving/fast_path.py hands the request to FastAPI).

    Raises HTTPException (422: a text or the batch over a limit, an unknown variant; 403: a
    variant without the admin scope) or NoModelLoaded (503). The request is routed by
    `user_id`, else the token's subject (with auth disabled and no `user_id`, at random), or
    given the `variant` an admin asked for; a model with entity features reads them for
    `user_id` (the author) and `account`.
    """
    if isinstance(body, BatchPredictRequest):
        texts = body.texts
        if len(texts) > settings.max_batch_size:
            raise HTTPException(
                422, f"{len(texts)} texts in one batch; the limit is {settings.max_batch_size}"
            )
    else:
        texts = [body.text]
    _check_texts(texts, settings.max_text_chars)
    if body.variant is not None and "admin" not in principal.scopes:
        raise HTTPException(
            403,
            "choosing a variant needs a token with the 'admin' scope; leave 'variant' out "
            "to be routed",
            headers={"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="admin"'},
        )
    subject = body.user_id or (None if settings.auth_disabled else principal.subject)
    try:
        route = pool.answering(subject, body.variant)
    except UnknownVariant as exc:
        raise HTTPException(422, str(exc)) from exc
    return Plan(texts, subject, EntityKeys(body.user_id, body.account), route)


async def carry_out(
    planned: Plan, predictor: Predictor, access: AccessRecord, settings: Settings
) -> Answer:
    """Score a planned request (its shadow started, its predictions logged) and tell the
    access log which model answered."""
    answer = await predictor.predict(planned.route, planned.texts, planned.subject, planned.keys)
    access.model_version = answer.model_version
    access.variant = answer.variant
    if settings.log_texts:
        access.texts = planned.texts
    return answer


def predictions(answer: Answer) -> list[Prediction]:
    """The response's predictions, in the order of the request's texts."""
    row = answer.features
    features = None if row is None else EntityFeatures(source=row.source, defaults=row.defaults)
    return [
        Prediction(
            label=p.label,
            probabilities=p.probabilities,
            model_version=answer.model_version,
            variant=answer.variant,
            prediction_id=p.prediction_id,
            features=features,
        )
        for p in answer.predictions
    ]


@router.post(
    "/predict",
    response_model=Prediction,
    # `features` only for a model with entity features: a text-only answer stays as it was.
    response_model_exclude_none=True,
    responses=ERRORS,
    dependencies=[Depends(require_json)],
    summary="Classify one text",
)
async def predict(
    body: PredictRequest,
    principal: Annotated[Principal, Depends(require_scope("predict"))],
    settings: SettingsDep,
    pool: PoolDep,
    predictor: PredictorDep,
    access: AccessRecordDep,
) -> Prediction:
    answer = await carry_out(plan(body, principal, settings, pool), predictor, access, settings)
    return predictions(answer)[0]


@router.post(
    "/predict/batch",
    response_model=BatchPrediction,
    response_model_exclude_none=True,
    responses=ERRORS,
    dependencies=[Depends(require_json)],
    summary="Classify several texts at once",
)
async def predict_batch(
    body: BatchPredictRequest,
    principal: Annotated[Principal, Depends(require_scope("predict"))],
    settings: SettingsDep,
    pool: PoolDep,
    predictor: PredictorDep,
    access: AccessRecordDep,
) -> BatchPrediction:
    answer = await carry_out(plan(body, principal, settings, pool), predictor, access, settings)
    return BatchPrediction(predictions=predictions(answer))


@router.get("/models", response_model=ModelsResponse, responses=ERRORS, summary="Loaded models")
async def models(
    _: Annotated[Principal, Depends(require_scope("predict"))], pool: PoolDep
) -> ModelsResponse:
    return ModelsResponse(
        models=[
            LoadedModelInfo(
                alias=m.alias,
                version=m.version,
                sha256=m.sha256,
                run_id=m.run_id,
                scorer=m.scorer.kind,
                scorer_note=m.scorer.note,
                classes=m.classes,
                loaded_at=m.loaded_at,
            )
            for m in pool.snapshot().values()
        ]
    )


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses=ERRORS,
    summary="Read the routing config and re-resolve its aliases in the registry now; swap in "
    "changed versions and a new routing config that can serve",
)
async def reload_models(
    _: Annotated[Principal, Depends(require_scope("admin"))], pool: PoolDep
) -> ReloadResponse:
    refresh = await pool.refresh()
    routing = refresh.routing
    return ReloadResponse(
        routing=RoutingResult(
            result=routing.result, experiment=routing.experiment, error=routing.error
        ),
        results=[
            ReloadResult(alias=o.alias, version=o.version, result=o.result, error=o.error)
            for o in refresh.models
        ],
    )


@router.get("/health", response_model=Status, summary="Liveness: the process answers")
async def health() -> Status:
    return Status(status="ok")


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    summary="Readiness: every variant that gets users has a verified model, and the server is "
    "not shutting down",
    description="`prediction_log` says whether predictions are being written to the log; a "
    "log that cannot be written does not make the server unready (predictions wait in a "
    "bounded queue meanwhile).",
)
async def ready(services: ServicesDep) -> Response:
    prediction_log = services.prediction_log.health()
    if services.draining:
        body = {"status": "draining", "detail": "shutting down", "prediction_log": prediction_log}
        return JSONResponse(body, status_code=503)
    try:
        serving = services.pool.readiness()
    except NoModelLoaded as exc:
        body = {"status": "not ready", "detail": str(exc), "prediction_log": prediction_log}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "detail": serving, "prediction_log": prediction_log})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    include_in_schema=True,
    response_class=PlainTextResponse,
    responses={
        200: {"description": "The Prometheus text exposition format"},
        503: {
            "description": "Metrics unavailable (no room for the shared metric files)",
            "content": {"application/json": {}},
        },
    },
)
async def metrics(metrics: MetricsDep) -> Response:
    try:
        body, content_type = metrics.exposition()
    except MetricsUnavailable as exc:
        return JSONResponse({"detail": f"metrics unavailable: {exc}"}, status_code=503)
    return Response(body, media_type=content_type)
