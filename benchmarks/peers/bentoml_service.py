"""The BentoML peer of benchmarks/peers.py: a service wrapping the registered pipeline's skops
file (path in `BENCH_PEER_MODEL`, workers in `BENCH_PEER_WORKERS`), `POST /predict` with
`{"text": ...}` calling sklearn's `predict_proba`. Runs in its own virtualenv:

    bentoml serve bentoml_service:Sentiment --working-dir benchmarks/peers
"""

from __future__ import annotations

import os

import bentoml
import skops.io

MODEL = os.environ["BENCH_PEER_MODEL"]


@bentoml.service(workers=int(os.environ.get("BENCH_PEER_WORKERS", "1")))
class Sentiment:
    def __init__(self) -> None:
        self.pipeline = skops.io.load(MODEL, trusted=skops.io.get_untrusted_types(file=MODEL))
        self.classes = [str(c) for c in self.pipeline.classes_]

    @bentoml.api
    def predict(self, text: str) -> dict[str, object]:
        probabilities = self.pipeline.predict_proba([text])[0]
        best = int(probabilities.argmax())
        return {
            "label": self.classes[best],
            "probabilities": dict(zip(self.classes, probabilities.tolist(), strict=True)),
        }
