"""Routing over HTTP, in process: which variant and version answer whom, the admin's choice of
variant, routing files changed (or broken) under a running server, and readiness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sklearn.pipeline import Pipeline

from sentiment_mlops.registry import IntegrityError
from sentiment_mlops.serving.app import create_app
from sentiment_mlops.serving.routing import Router, RoutingConfig

from ..apps import (
    api_settings,
    bearer,
    captured_logs,
    eventually,
    mint,
    ready_client,
    write_routing,
)
from ..fakes import FakeSource, RecordingSink

VERSIONS = {"champion": 1, "challenger": 2}
USERS = [f"user-{i}" for i in range(40)]


def both(default_model: Pipeline) -> FakeSource:
    """The same model as version 1 on champion and version 2 on challenger."""
    return FakeSource({1: default_model, 2: default_model}, dict(VERSIONS))


class Server:
    """An app over `source`, routed by a file the test rewrites, recording its predictions."""

    def __init__(self, tmp_path: Path, source: FakeSource, **settings: Any) -> None:
        self.routing = tmp_path / "routing.yaml"
        self.sink = RecordingSink()
        self.source = source
        self.settings = api_settings(tmp_path / "var", routing=self.routing, **settings)

    def route(self, **config: Any) -> RoutingConfig:
        write_routing(self.routing, **config)
        return RoutingConfig(**config)

    def app(self) -> Any:
        return create_app(self.settings, self.source, prediction_sink=self.sink)


@pytest.fixture
def server(tmp_path: Path, default_model: Pipeline) -> Server:
    return Server(tmp_path, both(default_model))


@pytest.fixture
def client(server: Server) -> Iterator[TestClient]:
    server.route(experiment="tone", variants={"champion": 50, "challenger": 50})
    with ready_client(server.app(), headers=bearer("predict")) as client:
        yield client


def reload(client: TestClient) -> dict[str, Any]:
    response = client.post("/admin/reload", headers=bearer("admin"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_each_user_gets_its_variant_and_that_variant_s_version(
    server: Server, client: TestClient
) -> None:
    router = Router(RoutingConfig(experiment="tone", variants={"champion": 50, "challenger": 50}))
    seen = set()
    for user in USERS:
        body = client.post("/predict", json={"text": "great crew", "user_id": user}).json()
        expected = router.assign(user)
        assert (body["variant"], body["model_version"]) == (expected, VERSIONS[expected]), user
        seen.add(expected)
    assert seen == {"champion", "challenger"}
    events = server.sink.events
    assert [(e.subject, e.variant, e.experiment, e.shadow_of) for e in events] == [
        (user, router.assign(user), "tone", None) for user in USERS
    ]


def test_without_a_user_id_the_token_s_subject_decides(client: TestClient) -> None:
    router = Router(RoutingConfig(experiment="tone", variants={"champion": 50, "challenger": 50}))
    subjects = [f"app-{i}" for i in range(20)]
    for subject in subjects:
        headers = {"Authorization": f"Bearer {mint('predict', subject=subject)}"}
        for _ in range(3):
            body = client.post("/predict", json={"text": "fine"}, headers=headers).json()
            assert body["variant"] == router.assign(subject), subject


def test_a_batch_is_routed_once_and_answered_by_one_variant(
    server: Server, client: TestClient
) -> None:
    router = Router(RoutingConfig(experiment="tone", variants={"champion": 50, "challenger": 50}))
    for user in USERS[:10]:
        body = client.post(
            "/predict/batch", json={"texts": ["good", "bad", "fine"], "user_id": user}
        ).json()
        assert {(p["variant"], p["model_version"]) for p in body["predictions"]} == {
            (router.assign(user), VERSIONS[router.assign(user)])
        }


def test_with_auth_disabled_and_no_user_each_request_is_drawn(
    server: Server, tmp_path: Path, default_model: Pipeline
) -> None:
    server = Server(tmp_path, both(default_model), auth_disabled=True)
    server.route(experiment="tone", variants={"champion": 50, "challenger": 50})
    with ready_client(server.app()) as client:
        variants = {
            client.post("/predict", json={"text": "ok"}).json()["variant"] for _ in range(40)
        }
    assert variants == {"champion", "challenger"}  # all 40 alike: odds 2 in 2**40
    assert {e.subject for e in server.sink.events} == {None}


def test_choosing_a_variant_needs_the_admin_scope(server: Server, default_model: Pipeline) -> None:
    server.route(experiment="tone", variants={"champion": 100, "challenger": 0})
    with ready_client(server.app(), headers=bearer("predict")) as client:
        refused = client.post("/predict", json={"text": "good", "variant": "challenger"})
        refused_batch = client.post(
            "/predict/batch", json={"texts": ["good"], "variant": "champion"}
        )
        admin = bearer("predict", "admin")
        chosen = client.post(
            "/predict", json={"text": "good", "variant": "challenger"}, headers=admin
        )
        chosen_batch = client.post(
            "/predict/batch",
            json={"texts": ["good", "bad"], "variant": "challenger"},
            headers=admin,
        )
        unknown = client.post("/predict", json={"text": "good", "variant": "nope"}, headers=admin)
        routed = client.post("/predict", json={"text": "good"}, headers=admin)
    for response in (refused, refused_batch):
        assert response.status_code == 403
        assert (
            "choosing a variant needs a token with the 'admin' scope" in response.json()["detail"]
        )
        assert 'scope="admin"' in response.headers["www-authenticate"]
    assert chosen.status_code == 200
    assert (chosen.json()["variant"], chosen.json()["model_version"]) == ("challenger", 2)
    assert {p["variant"] for p in chosen_batch.json()["predictions"]} == {"challenger"}
    assert unknown.status_code == 422
    assert unknown.json()["detail"] == (
        "variant 'nope' is not in the routing config of experiment 'tone'; "
        "it names champion, challenger"
    )
    assert routed.json()["variant"] == "champion", "weight 0: no user is routed there"
    experiments = [(e.variant, e.experiment) for e in server.sink.events]
    assert experiments == [("challenger", "override")] * 3 + [("champion", "tone")]


def test_a_chosen_variant_without_a_model_is_503_with_the_reason(
    server: Server, default_model: Pipeline
) -> None:
    server.source.load_errors[2] = IntegrityError("artifact sha256 does not match")
    server.route(experiment="tone", variants={"champion": 100, "challenger": 0})
    with ready_client(server.app(), headers=bearer("predict", "admin")) as client:
        eventually(lambda: 2 in server.source.loads, "the challenger's load was tried")
        response = client.post("/predict", json={"text": "good", "variant": "challenger"})
        ready = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["detail"] == (
        "no verified 'challenger' model is loaded yet: version 2 refused: "
        "artifact sha256 does not match"
    )
    assert (ready.json()["status"], ready.json()["detail"]) == ("ready", "champion version 1")


def test_a_changed_routing_file_applies_on_reload(server: Server) -> None:
    server.route(experiment="tone", variants={"champion": 100})
    with ready_client(server.app(), headers=bearer("predict")) as client:
        before = {
            client.post("/predict", json={"text": "ok", "user_id": u}).json()["variant"]
            for u in USERS
        }
        split = server.route(experiment="tone", variants={"champion": 80, "challenger": 20})
        with captured_logs() as lines:
            answer = reload(client)
        after = [client.post("/predict", json={"text": "ok", "user_id": u}).json() for u in USERS]
        models = client.get("/models").json()["models"]
        ready = client.get("/ready").json()
        metrics = client.get("/metrics").text
    assert before == {"champion"}
    assert answer["routing"] == {"result": "applied", "experiment": "tone", "error": None}
    assert [(r["alias"], r["result"]) for r in answer["results"]] == [
        ("champion", "unchanged"),
        ("challenger", "loaded"),
    ]
    router = Router(split)
    assert [(b["variant"], b["model_version"]) for b in after] == [
        (router.assign(u), VERSIONS[router.assign(u)]) for u in USERS
    ]
    assert {"champion", "challenger"} == {b["variant"] for b in after}
    assert sorted((m["alias"], m["version"]) for m in models) == [
        ("challenger", 2),
        ("champion", 1),
    ]
    assert (ready["status"], ready["detail"]) == (
        "ready",
        "champion version 1, challenger version 2",
    )
    assert 'routing_reloads_total{result="applied"} 2.0' in metrics  # at startup, and now
    (applied,) = [r for r in lines if r["msg"] == "routing applied"]
    assert applied["variants"] == {"champion": 80, "challenger": 20}
    assert applied["previous_experiment"] == "tone"


def test_the_registry_poll_applies_a_changed_routing_file_too(
    tmp_path: Path, default_model: Pipeline
) -> None:
    server = Server(tmp_path, both(default_model), reload_interval_seconds=0.05)
    server.route(experiment="tone", variants={"champion": 100})
    with ready_client(server.app(), headers=bearer("predict")) as client:
        server.route(experiment="tone", variants={"challenger": 100})
        eventually(
            lambda: client.post("/predict", json={"text": "ok"}).json()["variant"] == "challenger",
            "the poll to apply the new routing",
        )


def test_an_alias_no_config_names_any_more_is_unloaded(server: Server) -> None:
    server.route(experiment="tone", variants={"champion": 100})
    with ready_client(server.app(), headers=bearer("predict")) as client:
        server.route(experiment="tone", variants={"champion": 50, "challenger": 50})
        reload(client)
        server.route(experiment="solo", variants={"challenger": 100})
        answer = reload(client)
        models = client.get("/models").json()["models"]
        body = client.post("/predict", json={"text": "ok", "user_id": "u"}).json()
        metrics = client.get("/metrics").text
    assert answer["routing"]["result"] == "applied"
    assert [(m["alias"], m["version"]) for m in models] == [("challenger", 2)]
    assert (body["variant"], body["model_version"]) == ("challenger", 2)
    assert 'model_info{model_version="1",scorer="compiled",sha256=' in metrics
    assert 'variant="champion"} 0.0' in metrics


BAD_FILES = {
    "weights-sum": (
        {"experiment": "tone", "variants": {"champion": 80, "challenger": 10}},
        "variants: weights sum to 90; they must sum to 100",
    ),
    "negative-weight": (
        {"experiment": "tone", "variants": {"champion": 100, "challenger": -10}},
        "variants.challenger: Input should be greater than or equal to 0",
    ),
    "shadow-is-a-variant": (
        {"experiment": "tone", "variants": {"champion": 100}, "shadow": "champion"},
        "shadow: 'champion' is also a variant",
    ),
    "unknown-key": (
        {"experiment": "tone", "variants": {"champion": 100}, "weights": {}},
        "weights: unknown key",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_routing_file_on_reload_keeps_the_old_routing(server: Server, case: str) -> None:
    config, message = BAD_FILES[case]
    old = server.route(experiment="tone", variants={"champion": 50, "challenger": 50})
    with ready_client(server.app(), headers=bearer("predict")) as client:
        write_routing(server.routing, **config)
        with captured_logs() as lines:
            first, second = reload(client), reload(client)
        served = [
            client.post("/predict", json={"text": "ok", "user_id": u}).json()["variant"]
            for u in USERS
        ]
        metrics = client.get("/metrics").text
        ready = client.get("/ready")
    error = first["routing"]["error"]
    assert error.startswith(f"{server.routing}: ") and message in error
    assert first["routing"] == {"result": "refused", "experiment": "tone", "error": error}
    assert second["routing"] == first["routing"]
    assert served == [Router(old).assign(u) for u in USERS]
    assert 'routing_reloads_total{result="refused"} 2.0' in metrics
    refusals = [r for r in lines if r["msg"] == "routing config refused"]
    assert [(r["level"], r["error"], r["experiment"]) for r in refusals] == [
        ("error", error, "tone")
    ], "logged once, not at every reload"
    assert ready.status_code == 200


@pytest.mark.parametrize("role", ["variant", "shadow"])
def test_a_config_naming_an_alias_with_no_version_is_refused_until_it_has_one(
    tmp_path: Path, default_model: Pipeline, role: str
) -> None:
    server = Server(tmp_path, FakeSource({1: default_model, 2: default_model}, {"champion": 1}))
    server.route(experiment="tone", variants={"champion": 100})
    if role == "variant":
        config: dict[str, Any] = {"variants": {"champion": 90, "challenger": 10}}
    else:
        config = {"variants": {"champion": 100}, "shadow": "challenger"}
    with ready_client(server.app(), headers=bearer("predict")) as client:
        server.route(experiment="ab", **config)
        refused = reload(client)
        served = {
            client.post("/predict", json={"text": "ok", "user_id": u}).json()["variant"]
            for u in USERS
        }
        server.source.aliases["challenger"] = 2
        applied = reload(client)
    assert refused["routing"] == {
        "result": "refused",
        "experiment": "tone",
        "error": "alias 'challenger' named by the routing config is not set in the registry",
    }
    assert ("challenger", None, "missing") in [
        (r["alias"], r["version"], r["result"]) for r in refused["results"]
    ]
    assert served == {"champion"}
    assert applied["routing"] == {"result": "applied", "experiment": "ab", "error": None}


def test_a_variant_whose_version_is_refused_keeps_the_old_routing(server: Server) -> None:
    server.route(experiment="tone", variants={"champion": 100})
    server.source.load_errors[2] = IntegrityError("artifact sha256 does not match")
    with ready_client(server.app(), headers=bearer("predict")) as client:
        server.route(experiment="ab", variants={"champion": 90, "challenger": 10})
        answer = reload(client)
    assert answer["routing"] == {
        "result": "refused",
        "experiment": "tone",
        "error": "no model for variant 'challenger': version 2 refused: "
        "artifact sha256 does not match",
    }


def test_a_worker_starting_with_a_bad_file_is_unready_until_it_is_fixed(server: Server) -> None:
    write_routing(server.routing, experiment="tone", variants={"champion": 50})
    waiting = (
        f"no routing config in effect yet: routing config refused: {server.routing}: "
        "variants: weights sum to 50; they must sum to 100"
    )
    with TestClient(server.app(), headers=bearer("predict", "admin")) as client:
        eventually(lambda: client.get("/ready").json()["detail"] == waiting, "/ready says why")
        ready = client.get("/ready")
        predict = client.post("/predict", json={"text": "ok"})
        server.route(experiment="tone", variants={"champion": 100})
        fixed = reload(client)
        eventually(lambda: client.get("/ready").status_code == 200, "ready once fixed")
        served = client.post("/predict", json={"text": "ok"})
    assert ready.status_code == 503 and predict.status_code == 503
    assert predict.json()["detail"] == waiting
    assert fixed["routing"] == {"result": "applied", "experiment": "tone", "error": None}
    assert served.status_code == 200


def test_not_ready_until_every_variant_with_users_has_a_model(
    tmp_path: Path, default_model: Pipeline
) -> None:
    """A missing shadow does not hold readiness; a missing variant that gets users does."""
    server = Server(tmp_path, FakeSource({1: default_model}, {"champion": 1}))
    server.route(experiment="tone", variants={"champion": 100}, shadow="challenger")
    with ready_client(server.app(), headers=bearer("predict")) as client:
        shadowless = client.get("/ready").json()
    assert (shadowless["status"], shadowless["detail"]) == (
        "ready",
        "champion version 1, shadow challenger not loaded (alias 'challenger' not "
        "set in the registry); requests are answered without it",
    )
    server = Server(tmp_path / "2", FakeSource({1: default_model}, {"champion": 1}))
    server.route(experiment="tone", variants={"champion": 90, "challenger": 10})
    with TestClient(server.app()) as client:
        detail = "no verified 'challenger' model is loaded yet: alias 'challenger' not set in the "
        detail += "registry"
        eventually(lambda: client.get("/ready").json()["detail"] == detail, "/ready says why")
        assert client.get("/ready").status_code == 503
