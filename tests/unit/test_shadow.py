"""The shadow variant over HTTP, in process: it scores the same texts after the response, never
changes it, goes to the prediction sink paired with the primary prediction, is counted under
its own variant, and is bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from sentiment_mlops.serving.app import create_app

from ..apps import api_settings, bearer, captured_logs, eventually, ready_client, write_routing
from ..fakes import Failing, FakeSource, Gated, RecordingSink

TEXT = "HOLD FAIL the crew was lovely"  # held by a Gated shadow, refused by a Failing one


def shadowed_app(
    tmp_path: Path, shadow: Any, sink: RecordingSink, champion: Any, **settings: Any
) -> Any:
    """champion (version 1) answers everyone; `shadow` (version 2, None for no shadow) is
    `challenger`, scoring in shadow."""
    routing = write_routing(
        tmp_path / "routing.yaml",
        experiment="shadowing",
        variants={"champion": 100},
        shadow="challenger" if shadow is not None else None,
    )
    versions = {1: champion, **({2: shadow} if shadow is not None else {})}
    source = FakeSource(versions, {"champion": 1, **({"challenger": 2} if shadow else {})})
    settings = api_settings(tmp_path / "var", routing=routing, **settings)
    return create_app(settings, source, prediction_sink=sink)


@pytest.mark.parametrize("kind", ["none", "slow", "failing"])
def test_the_primary_answer_is_the_same_whatever_the_shadow_does(
    tmp_path: Path, default_model: Pipeline, kind: str
) -> None:
    """A held shadow is still blocked when the response arrives (had the handler waited for
    it, the request would have waited for the release, which comes only after the
    response); a failing one is logged and counted; neither changes status or body."""
    shadow = {"none": None, "slow": Gated(default_model), "failing": Failing(default_model)}[kind]
    sink = RecordingSink()
    app = shadowed_app(tmp_path, shadow, sink, default_model)
    with captured_logs() as lines, ready_client(app, headers=bearer("predict")) as client:
        response = client.post("/predict", json={"text": TEXT, "user_id": "u1"})
        at_response = list(sink.events)
        if isinstance(shadow, Gated):
            assert shadow.arrived.acquire(timeout=30), "the shadow never started scoring"
            shadow.release.set()
        expected_events = 1 if kind == "failing" else 2 if kind == "slow" else 1
        eventually(lambda: len(sink.events) == expected_events, "the shadow to finish")
        if kind == "failing":
            eventually(
                lambda: any(r["msg"] == "shadow prediction failed" for r in lines),
                "the failure to be logged",
            )
        metrics = client.get("/metrics").text
    proba = default_model.predict_proba([TEXT])[0]
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"label", "probabilities", "model_version", "variant", "prediction_id"}
    assert (body["model_version"], body["variant"]) == (1, "champion")
    assert body["label"] == default_model.classes_[np.argmax(proba)]
    got = [body["probabilities"][c] for c in default_model.classes_]
    np.testing.assert_allclose(got, proba, rtol=0, atol=1e-12)
    assert [(e.prediction_id, e.shadow_of) for e in at_response] == [(body["prediction_id"], None)]
    if kind == "failing":
        assert 'model_shadow_dropped_total{reason="error",variant="challenger"} 1.0' in metrics
        (failed,) = [r for r in lines if r["msg"] == "shadow prediction failed"]
        assert failed["level"] == "error" and failed["variant"] == "challenger"
        assert failed["error"] == "RuntimeError: this model fails on purpose"
    else:
        assert "model_shadow_dropped_total{" not in metrics


def test_the_shadow_prediction_reaches_the_sink_paired_and_is_counted_under_its_variant(
    tmp_path: Path, default_model: Pipeline
) -> None:
    sink = RecordingSink()
    app = shadowed_app(tmp_path, default_model, sink, default_model)
    texts = ["what a lovely crew", "my bag is lost", "ok"]
    with ready_client(app, headers=bearer("predict")) as client:
        body = client.post("/predict/batch", json={"texts": texts, "user_id": "u7"}).json()
        eventually(lambda: len(sink.events) == 6, "the shadow's three predictions")
        metrics = client.get("/metrics").text
    primary, shadow = sink.events[:3], sink.events[3:]
    ids = [p["prediction_id"] for p in body["predictions"]]
    assert [e.prediction_id for e in primary] == ids
    assert [(e.variant, e.model_version, e.shadow_of) for e in primary] == [
        ("champion", 1, None)
    ] * 3
    assert [(e.variant, e.model_version, e.shadow_of) for e in shadow] == [
        ("challenger", 2, primary_id) for primary_id in ids
    ]
    assert not {e.prediction_id for e in shadow} & set(ids), "the shadow has ids of its own"
    for event in sink.events:
        assert (event.experiment, event.subject) == ("shadowing", "u7")
        assert event.latency_ms >= 0
    assert [e.text for e in shadow] == texts
    expected = default_model.predict_proba(texts)
    for event, row in zip(shadow, expected, strict=True):
        np.testing.assert_allclose(
            [event.probabilities["negative"], event.probabilities["positive"]], row, atol=1e-12
        )
    shadow_labels = [e.label for e in shadow]
    for label in set(shadow_labels):
        line = (
            f'model_predictions_total{{label="{label}",model_version="2",variant="challenger"}} '
            f"{float(shadow_labels.count(label))}"
        )
        assert line in metrics
    assert 'model_inference_duration_seconds_count{model_version="2",variant="challenger"} 1.0' in (
        metrics
    )
    assert {p["variant"] for p in body["predictions"]} == {"champion"}


def test_shadow_work_is_bounded_and_what_is_over_the_bound_is_dropped_and_counted(
    tmp_path: Path, default_model: Pipeline
) -> None:
    """Two shadow requests in flight at most: the first blocks the shadow's thread, the
    second waits behind it, the next two are dropped; the primary answers all four."""
    gated, sink = Gated(default_model), RecordingSink()
    app = shadowed_app(tmp_path, gated, sink, default_model, shadow_max_in_flight=2)
    with ready_client(app, headers=bearer("predict")) as client:
        statuses = [
            client.post("/predict", json={"text": f"HOLD {i}"}).status_code for i in range(4)
        ]
        metrics_while_held = client.get("/metrics").text
        assert gated.arrived.acquire(timeout=30)
        gated.release.set()
        eventually(lambda: len(sink.events) == 6, "the two admitted shadow predictions")
    assert statuses == [200] * 4
    assert 'model_shadow_dropped_total{reason="busy",variant="challenger"} 2.0' in (
        metrics_while_held
    )
    shadows = [e for e in sink.events if e.shadow_of is not None]
    primaries = [e.prediction_id for e in sink.events if e.shadow_of is None]
    assert [e.shadow_of for e in shadows] == primaries[:2]


def test_a_shadow_without_a_model_is_counted_and_the_request_answered(
    tmp_path: Path, default_model: Pipeline
) -> None:
    sink = RecordingSink()
    routing = write_routing(
        tmp_path / "routing.yaml",
        experiment="shadowing",
        variants={"champion": 100},
        shadow="challenger",
    )
    source = FakeSource({1: default_model}, {"champion": 1})
    app = create_app(api_settings(tmp_path / "var", routing=routing), source, prediction_sink=sink)
    with ready_client(app, headers=bearer("predict")) as client:
        response = client.post("/predict", json={"text": "fine"})
        metrics = client.get("/metrics").text
    assert response.status_code == 200
    assert 'model_shadow_dropped_total{reason="no_model",variant="challenger"} 1.0' in metrics
    assert [e.variant for e in sink.events] == ["champion"]
