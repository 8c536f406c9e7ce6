"""The prediction log through the HTTP API, in process: what `/predict` writes to it, `POST
/feedback` and its refusals, `model_feedback_total`, and a log database that is down."""

from __future__ import annotations

import hashlib
import json
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sklearn.pipeline import Pipeline

from sentiment_mlops.serving.app import create_app
from sentiment_mlops.serving.launcher import free_port
from sentiment_mlops.serving.prediction_log import PredictionLog
from sentiment_mlops.serving.predictions import new_prediction_id, prediction_time_ms

from ..apps import (
    api_settings,
    bearer,
    captured_logs,
    eventually,
    mint,
    ready_client,
    write_routing,
)
from ..fakes import FakeSource
from ..prediction_events import BOUND, keyed_hash, logged_rows


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def prediction_log(client: TestClient) -> PredictionLog:
    log: PredictionLog = client.app.state.services.prediction_log
    return log


def written(client: TestClient) -> dict[str, dict[str, Any]]:
    """The log's rows once everything this app queued is written."""
    assert prediction_log(client).flush(BOUND)
    return logged_rows(client.app.state.services.settings.prediction_log_url())


@pytest.fixture(scope="module")
def var(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prediction-log") / "var"


@pytest.fixture(scope="module")
def api(var: Path, default_model: Pipeline) -> Iterator[TestClient]:
    app = create_app(api_settings(var), FakeSource({1: default_model}, {"champion": 1}))
    with ready_client(app, headers=bearer("predict", "feedback")) as client:
        yield client


def predict(client: TestClient, text: str, **body: Any) -> dict[str, Any]:
    response = client.post("/predict", json={"text": text, **body})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def feedback(client: TestClient, prediction_id: str, label: str, **kwargs: Any) -> Any:
    return client.post("/feedback", json={"prediction_id": prediction_id, "label": label}, **kwargs)


def feedback_count(client: TestClient, correct: str) -> float:
    wanted = f'model_feedback_total{{correct="{correct}",model_version="1",variant="champion"}} '
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(wanted):
            return float(line.split()[-1])
    return 0.0


def test_each_prediction_is_logged_with_hashes_not_the_text_or_the_user(api: TestClient) -> None:
    text = "Thanks for the great service"
    answer = predict(api, text, user_id="alice@example.com", account="@united")
    batch = api.post("/predict/batch", json={"texts": ["awful delay", "fine"]}).json()
    rows = written(api)
    row = rows[answer["prediction_id"]]
    assert row["label"] == answer["label"] == "positive"
    assert row["probabilities"] == answer["probabilities"]
    assert (row["model_version"], row["variant"], row["experiment"]) == (1, "champion", "default")
    assert row["text"] is None
    assert (row["text_sha256"], row["text_length"]) == (sha256(text), len(text))
    assert row["subject_hash"] == keyed_hash("alice@example.com") != sha256("alice@example.com")
    assert row["account"] == "@united", "the account as given: not personal data"
    assert row["shadow_of"] is None and row["latency_ms"] > 0
    made_ms = prediction_time_ms(answer["prediction_id"])
    assert made_ms is not None
    made = datetime.fromtimestamp(made_ms / 1000, UTC)
    assert abs(row["created_at"].replace(tzinfo=UTC) - made) < timedelta(seconds=1)
    for p in batch["predictions"]:
        assert rows[p["prediction_id"]]["subject_hash"] == keyed_hash("tester"), "token's subject"
        assert rows[p["prediction_id"]]["label"] == p["label"]
        assert rows[p["prediction_id"]]["account"] is None


def test_texts_are_logged_when_the_operator_enables_it(
    tmp_path: Path, default_model: Pipeline
) -> None:
    settings = api_settings(tmp_path / "var", prediction_log_texts=True)
    app = create_app(settings, FakeSource({1: default_model}, {"champion": 1}))
    with ready_client(app, headers=bearer("predict")) as client:
        answer = predict(client, "the crew was wonderful")
        rows = written(client)
    assert rows[answer["prediction_id"]]["text"] == "the crew was wonderful"


def test_stopping_the_app_closes_the_log_with_every_prediction_written(
    tmp_path: Path, default_model: Pipeline
) -> None:
    """No flush asked for: the app's shutdown closes the log, which writes what is queued."""
    settings = api_settings(tmp_path / "var")
    app = create_app(settings, FakeSource({1: default_model}, {"champion": 1}))
    with captured_logs() as lines, ready_client(app, headers=bearer("predict")) as client:
        made = [predict(client, f"a calm flight {i}")["prediction_id"] for i in range(5)]
    assert set(made) <= set(logged_rows(settings.prediction_log_url()))
    closed = [line for line in lines if line["msg"].startswith("prediction log closed")]
    assert [(line["written"], line["dropped"]) for line in closed] == [(5, 0)]


def test_without_a_subject_key_users_are_hashed_with_a_generated_private_key(
    tmp_path: Path, default_model: Pipeline
) -> None:
    settings = api_settings(tmp_path / "var", subject_key=None)
    app = create_app(settings, FakeSource({1: default_model}, {"champion": 1}))
    with captured_logs() as lines, ready_client(app, headers=bearer("predict")) as client:
        answer = predict(client, "a calm flight", user_id="misc")
        rows = written(client)
    key_file = settings.subject_key_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text(encoding="utf-8").strip()
    assert len(key) >= 64
    hashed = rows[answer["prediction_id"]]["subject_hash"]
    assert hashed == keyed_hash("misc", key.encode()) != sha256("misc")
    warnings = [line for line in lines if "SENTIMENT_SUBJECT_KEY" in line["msg"]]
    assert [line["key_file"] for line in warnings] == [str(key_file)]
    assert key not in json.dumps(lines)


def test_feedback_is_joined_once_and_a_repeat_answers_the_same(api: TestClient) -> None:
    before = feedback_count(api, "true"), feedback_count(api, "false")
    right = predict(api, "I love this airline")
    wrong = predict(api, "what a flight, never again")
    first = feedback(api, right["prediction_id"], right["label"])
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["prediction_id"] == right["prediction_id"]
    assert (body["label"], body["predicted_label"], body["correct"]) == ("positive",) * 2 + (True,)
    assert (body["model_version"], body["variant"]) == (1, "champion")
    repeat = feedback(api, right["prediction_id"], right["label"])
    assert (repeat.status_code, repeat.json()) == (200, body)
    other = "negative" if wrong["label"] == "positive" else "positive"
    corrected = feedback(api, wrong["prediction_id"], other)
    assert corrected.status_code == 200 and corrected.json()["correct"] is False
    after = feedback_count(api, "true"), feedback_count(api, "false")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1), "repeats are not counted"


def test_conflicting_feedback_is_refused(api: TestClient) -> None:
    made = predict(api, "lovely crew")
    assert feedback(api, made["prediction_id"], "positive").status_code == 200
    conflict = feedback(api, made["prediction_id"], "negative")
    assert conflict.status_code == 409
    assert "already has the feedback 'positive'" in conflict.json()["detail"]
    assert feedback(api, made["prediction_id"], "positive").json()["label"] == "positive"


def test_a_label_the_model_does_not_know_is_refused(api: TestClient) -> None:
    made = predict(api, "lovely crew")
    response = feedback(api, made["prediction_id"], "neutral")
    assert response.status_code == 422
    assert response.json()["detail"] == (
        f"label 'neutral' is not a class of model version 1, which made prediction "
        f"'{made['prediction_id']}'; its classes: negative, positive"
    )


def test_unknown_ids_are_404(api: TestClient) -> None:
    never = new_prediction_id(now_ms=time.time_ns() // 1_000_000 - 3_600_000)
    response = feedback(api, never, "positive")
    assert response.status_code == 404
    assert response.json()["detail"] == f"no prediction '{never}' in the log"
    garbage = feedback(api, "not-an-id", "positive")
    assert garbage.status_code == 404
    assert "not a prediction id this API issues" in garbage.json()["detail"]


def test_feedback_older_than_the_retention_is_404_and_says_so(api: TestClient) -> None:
    days_ago_91 = time.time_ns() // 1_000_000 - 91 * 86_400_000
    old = new_prediction_id(now_ms=days_ago_91)
    response = feedback(api, old, "positive")
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "longer ago than the log keeps predictions (90 days)" in detail
    assert "no longer in the log" in detail


def test_feedback_on_a_shadow_prediction_names_the_primary_one(
    tmp_path: Path, default_model: Pipeline
) -> None:
    """The challenger scores every request in shadow; its rows name the primary prediction,
    and only the primary one takes feedback."""
    var = tmp_path / "var"
    routing = write_routing(
        var / "routing.yaml", experiment="tone", variants={"champion": 100}, shadow="challenger"
    )
    source = FakeSource({1: default_model, 2: default_model}, {"champion": 1, "challenger": 2})
    app = create_app(api_settings(var, routing=routing), source)
    with ready_client(app, headers=bearer("predict", "feedback")) as client:
        primary = predict(client, "nice seats")["prediction_id"]

        def shadow_row() -> dict[str, Any] | None:
            rows = written(client).values()
            return next((r for r in rows if r["shadow_of"] == primary), None)

        shadow = eventually(shadow_row, "the shadow prediction logged")
        refused = feedback(client, shadow["id"], "positive")
        accepted = feedback(client, primary, "positive")
    assert (shadow["variant"], shadow["model_version"], shadow["experiment"]) == (
        "challenger",
        2,
        "tone",
    )
    assert refused.status_code == 422
    assert f"send feedback for the primary prediction '{primary}'" in refused.json()["detail"]
    assert accepted.status_code == 200 and accepted.json()["variant"] == "champion"


def test_feedback_needs_the_feedback_scope(api: TestClient) -> None:
    made = predict(api, "good food")
    only_predict = {"Authorization": f"Bearer {mint('predict')}"}
    refused = feedback(api, made["prediction_id"], "positive", headers=only_predict)
    assert refused.status_code == 403
    assert "lacks the 'feedback' scope" in refused.json()["detail"]
    request = api.build_request(
        "POST", "/feedback", json={"prediction_id": made["prediction_id"], "label": "positive"}
    )
    del request.headers["authorization"]
    assert api.send(request).status_code == 401
    only_feedback = {"Authorization": f"Bearer {mint('feedback')}"}
    assert feedback(api, made["prediction_id"], "positive", headers=only_feedback).status_code == (
        200
    )


def test_a_log_database_that_is_down_leaves_the_api_serving_and_ready(
    tmp_path: Path, default_model: Pipeline
) -> None:
    """Nothing listens at the log's address: predictions are served and wait in the queue;
    /ready stays 200 and says why the log cannot be written; feedback is 503, retry later."""
    nowhere = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/log"
    settings = api_settings(tmp_path / "var", database_url=nowhere, prediction_log_flush_seconds=0)
    app = create_app(settings, FakeSource({1: default_model}, {"champion": 1}))
    with ready_client(app, headers=bearer("predict", "feedback")) as client:
        made = [predict(client, f"good flight {i}") for i in range(3)]
        eventually(
            lambda: "3 predictions wait" in client.get("/ready").json()["prediction_log"],
            "/ready tells the log is down",
        )
        ready = client.get("/ready")
        answer = feedback(client, made[0]["prediction_id"], "positive")
        metrics = client.get("/metrics").text
    assert ready.status_code == 200
    status = ready.json()["prediction_log"]
    assert status.startswith("unavailable since") and "Connection refused" in status
    assert "3 predictions wait in this worker's queue" in status
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert "the prediction log is unavailable" in answer.json()["detail"]
    assert "prediction_log_queue_depth 3.0" in metrics
