"""Request and response bodies of the HTTP API (they are also its OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictStr

from sentiment_mlops.serving.entity_features import DefaultReason
from sentiment_mlops.serving.models import ReloadResultName, RoutingResultName

UserId = Annotated[
    StrictStr | None,
    Field(
        max_length=256,
        description="Stable id of the end user, if any: the same id always gets the same variant "
        "of an experiment. Without one, the token's subject is used. For a model trained with "
        "entity features it is also the author (the feature store's `user` entity) whose "
        "earlier texts it reads; all texts of a batch are by this user.",
    ),
]
Account = Annotated[
    StrictStr | None,
    Field(
        max_length=256,
        description="The account the text addresses (the feature store's `account` entity, "
        "e.g. the airline a tweet is sent to), for a model trained with entity features; "
        "ignored by other models. All texts of a batch address this account.",
    ),
]
Variant = Annotated[
    StrictStr | None,
    Field(
        max_length=64,
        description="Answer with this variant (an alias the routing config names) instead of the "
        "routed one; needs a token with the admin scope. Such predictions are outside the "
        "experiment (experiment 'override').",
    ),
]


class PredictRequest(BaseModel):
    text: StrictStr = Field(min_length=1, description="The text to classify.")
    user_id: UserId = None
    account: Account = None
    variant: Variant = None


class BatchPredictRequest(BaseModel):
    texts: list[Annotated[StrictStr, Field(min_length=1)]] = Field(
        min_length=1, description="Texts to classify, in order; none may be empty."
    )
    user_id: UserId = None
    account: Account = None
    variant: Variant = None


class EntityFeatures(BaseModel):
    """Where the entity features a prediction was scored with came from."""

    source: Literal["online", "defaults"] = Field(
        description="online: every entity's features were read from the online store; "
        "defaults: at least one entity got defaults (see `defaults`)."
    )
    defaults: dict[Literal["user", "account"], DefaultReason] = Field(
        default_factory=dict,
        description="Per entity that got defaults, why: no_key (not in the request; training "
        "means used), unknown_entity (no history in the store; zero counts and shares, as "
        "training had for it), unavailable (the store failed; training means), timeout (no "
        "answer within SENTIMENT_FEATURES_LOOKUP_TIMEOUT_SECONDS; training means).",
    )


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]
    model_version: int
    variant: str
    prediction_id: str
    features: EntityFeatures | None = Field(
        default=None,
        description="Only for a model trained with entity features: where they came from.",
    )


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


class LoadedModelInfo(BaseModel):
    alias: str
    version: int
    sha256: str
    run_id: str
    scorer: str
    # Why the model is scored by sklearn rather than compiled ("" when compiled).
    scorer_note: str = ""
    classes: list[str]
    loaded_at: datetime


class ModelsResponse(BaseModel):
    models: list[LoadedModelInfo]


class ReloadResult(BaseModel):
    alias: str
    version: int | None = Field(description="The version the alias points at, if known.")
    result: ReloadResultName = Field(
        description="loaded: swapped in; unchanged: already served; missing: the alias is not "
        "set; unreachable: the registry cannot be reached; timeout: it did not answer within "
        "SENTIMENT_REGISTRY_TIMEOUT_SECONDS (or an earlier call has still not returned); "
        "failed: the version was refused, or the registry answered with an error; loading: "
        "a load has run past SENTIMENT_MODEL_LOAD_TIMEOUT_SECONDS (a busy machine) and is let "
        "finish: it serves at the first poll after it does."
    )
    error: str | None = None


class RoutingResult(BaseModel):
    result: RoutingResultName = Field(
        description="applied: the routing config read now is in effect; unchanged: it is the "
        "one in effect; refused: it is invalid, names an alias not set in the registry, or a "
        "variant that gets users has no model, and the one in effect keeps serving."
    )
    experiment: str | None = Field(description="The experiment in effect after this reload.")
    error: str | None = Field(default=None, description="Why the routing config was refused.")


class ReloadResponse(BaseModel):
    routing: RoutingResult
    results: list[ReloadResult]


class Status(BaseModel):
    status: str
    detail: str | None = None


class Readiness(Status):
    prediction_log: str = Field(
        description="`ok`, or why predictions cannot be written to the log now (readiness "
        "does not depend on it)."
    )


class FeedbackRequest(BaseModel):
    prediction_id: StrictStr = Field(
        max_length=64, description="The `prediction_id` a prediction answered with."
    )
    label: StrictStr = Field(
        min_length=1, max_length=128, description="The true label, one of the model's classes."
    )


class FeedbackResponse(BaseModel):
    prediction_id: str
    label: str = Field(description="The true label, as stored (the first one sent).")
    predicted_label: str
    correct: bool
    model_version: int
    variant: str
    received_at: datetime = Field(description="When the feedback was first received.")


class Error(BaseModel):
    detail: str
