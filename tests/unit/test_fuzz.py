"""schemathesis fuzzes every operation of the OpenAPI schema in process: no input, however
odd, gets a server error (5xx other than the documented 503 while no model is loaded)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from sklearn.pipeline import Pipeline

from sentiment_mlops.serving.app import create_app

from ..apps import api_settings, mint, ready_client
from ..fakes import FakeSource


@pytest.fixture(scope="module")
def started_app(
    tmp_path_factory: pytest.TempPathFactory, default_model: Pipeline
) -> Iterator[FastAPI]:
    var = tmp_path_factory.mktemp("fuzz") / "var"
    app = create_app(
        api_settings(var, max_batch_size=16, max_text_chars=2000),
        FakeSource({1: default_model}, {"champion": 1}),
    )
    with ready_client(app):  # runs the lifespan (keys, model pool, services); the model loaded
        yield app


@pytest.fixture(scope="module")
def api_schema(started_app: FastAPI) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", started_app)


EVERYTHING = f"Bearer {mint('predict', 'feedback', 'admin')}"


def test_no_operation_answers_with_a_server_error(
    api_schema: schemathesis.schemas.BaseSchema,
) -> None:
    calls = 0
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def no_server_error(case: schemathesis.Case) -> None:
            nonlocal calls
            response = case.call(headers={"Authorization": EVERYTHING})
            calls += 1
            case.validate_response(response, checks=[not_a_server_error])

        no_server_error()
    assert len(operations) >= 8
    assert calls > 100
