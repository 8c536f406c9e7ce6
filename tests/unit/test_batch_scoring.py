"""A batch larger than the predictor's chunk is scored on the event loop a chunk at a time (the
compiled scorer) or in a thread (sklearn's): either way every text gets its own probabilities,
in the order sent, as sklearn gives them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline

from sentiment_mlops.serving.app import create_app
from sentiment_mlops.serving.predictor import INLINE_BATCH_LIMIT

from ..apps import api_settings, bearer, ready_client, write_routing
from ..fakes import FakeSource, Gated

WORDS = ["lovely", "rude", "fine", "awful", "great"]
ADJECTIVES = ["late", "smooth", "long"]
TEXTS = [f"{WORDS[i % 5]} crew, {ADJECTIVES[i % 3]} flight number {i}" for i in range(100)]


def test_a_batch_of_several_chunks_keeps_every_texts_probabilities_in_order(
    tmp_path: Path, default_model: Pipeline
) -> None:
    assert len(TEXTS) > 3 * INLINE_BATCH_LIMIT
    gated = Gated(default_model)  # not compilable: sklearn's scorer, in a thread
    gated.release.set()
    source = FakeSource({1: default_model, 2: gated}, {"champion": 1, "challenger": 2})
    expected = default_model.predict_proba(TEXTS)[:, 1]
    variants = {"champion": 50, "challenger": 50}
    routing = write_routing(tmp_path / "routing.yaml", experiment="e", variants=variants)
    with ready_client(
        create_app(api_settings(tmp_path, routing=routing), source),
        headers=bearer("predict", "admin"),
    ) as client:
        kinds = {m["alias"]: m["scorer"] for m in client.get("/models").json()["models"]}
        answers = {
            variant: client.post("/predict/batch", json={"texts": TEXTS, "variant": variant})
            for variant in ("champion", "challenger")
        }
    assert kinds == {"champion": "compiled", "challenger": "sklearn"}
    for variant, response in answers.items():
        assert response.status_code == 200, response.text
        got = [p["probabilities"]["positive"] for p in response.json()["predictions"]]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, err_msg=variant)
