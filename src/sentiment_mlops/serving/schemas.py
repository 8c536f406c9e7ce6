"""Request and response bodies of the HTTP API (they are also its OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, StrictStr

from sentiment_mlops.serving.models import ReloadResultName


class PredictRequest(BaseModel):
    text: StrictStr = Field(min_length=1, description="The text to classify.")
    user_id: StrictStr | None = Field(
        default=None, max_length=256, description="Stable id of the end user, if any."
    )


class BatchPredictRequest(BaseModel):
    texts: list[StrictStr] = Field(min_length=1, description="Texts to classify, in order.")


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]
    model_version: int
    variant: str
    prediction_id: str


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


class LoadedModelInfo(BaseModel):
    alias: str
    version: int
    sha256: str
    run_id: str
    scorer: str
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
        "failed: the version was refused, or the registry answered with an error."
    )
    error: str | None = None


class ReloadResponse(BaseModel):
    results: list[ReloadResult]


class Status(BaseModel):
    status: str
    detail: str | None = None


class Error(BaseModel):
    detail: str
