"""`POST /feedback`: the true label of a prediction, joined to it in the prediction log.

What the answers mean is decided in `prediction_log` and `log_database`; this module maps them
to HTTP: 404 unknown or expired, 409 conflicting, 422 not a class of the model or a shadow
prediction, 503 while the log cannot answer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from sentiment_mlops.serving.auth import require_scope
from sentiment_mlops.serving.deps import PredictionLogDep
from sentiment_mlops.serving.log_database import (
    ConflictingFeedback,
    PredictionExpired,
    ShadowPrediction,
    UnknownLabel,
    UnknownPrediction,
)
from sentiment_mlops.serving.prediction_log import LogUnavailable
from sentiment_mlops.serving.routes import require_json
from sentiment_mlops.serving.schemas import Error, FeedbackRequest, FeedbackResponse
from sentiment_mlops.serving.tokens import Principal

router = APIRouter()

RETRY_AFTER_SECONDS = 5

_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": Error},
    401: {"model": Error},
    403: {"model": Error},
    404: {
        "model": Error,
        "description": "No such prediction in the log, or it is older than the log keeps "
        "predictions (the message says which)",
    },
    409: {"model": Error, "description": "The prediction has feedback with another label"},
    413: {"model": Error},
    415: {"model": Error},
    422: {
        "model": Error,
        "description": "The label is not a class of the model version that made the "
        "prediction, the id is a shadow prediction's, or the body is invalid",
    },
    503: {
        "model": Error,
        "description": "The prediction log cannot answer now, or the prediction still waits "
        "to be written; retry after Retry-After seconds",
    },
}


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    responses=_RESPONSES,
    dependencies=[Depends(require_json)],
    summary="Send the true label of a prediction",
)
async def give_feedback(
    body: FeedbackRequest,
    _: Annotated[Principal, Depends(require_scope("feedback"))],
    prediction_log: PredictionLogDep,
) -> FeedbackResponse:
    """Feedback is final: sending the same label again answers as the first time did; another
    label is refused (409)."""
    try:
        joined = await prediction_log.feedback(body.prediction_id, body.label)
    except (UnknownPrediction, PredictionExpired) as exc:
        raise HTTPException(404, str(exc)) from exc
    except ConflictingFeedback as exc:
        raise HTTPException(409, str(exc)) from exc
    except (UnknownLabel, ShadowPrediction) as exc:
        raise HTTPException(422, str(exc)) from exc
    except LogUnavailable as exc:
        raise HTTPException(
            503, str(exc), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        ) from exc
    return FeedbackResponse(
        prediction_id=joined.prediction_id,
        label=joined.label,
        predicted_label=joined.predicted_label,
        correct=joined.correct,
        model_version=joined.model_version,
        variant=joined.variant,
        received_at=joined.received_at,
    )
