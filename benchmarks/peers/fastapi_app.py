"""The plain FastAPI peer of benchmarks/peers.py: the registered pipeline's skops file (path in
`BENCH_PEER_MODEL`) loaded once, and `POST /predict` calling sklearn's `predict_proba` per
request, with no auth, logging or metrics. Runs in its own virtualenv:

    uvicorn fastapi_app:app --app-dir benchmarks/peers --workers N
"""

from __future__ import annotations

import os

import skops.io
from fastapi import FastAPI
from pydantic import BaseModel

MODEL = os.environ["BENCH_PEER_MODEL"]
pipeline = skops.io.load(MODEL, trusted=skops.io.get_untrusted_types(file=MODEL))
classes = [str(c) for c in pipeline.classes_]

app = FastAPI()


class Text(BaseModel):
    text: str


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(request: Text) -> dict[str, object]:
    probabilities = pipeline.predict_proba([request.text])[0]
    best = int(probabilities.argmax())
    return {
        "label": classes[best],
        "probabilities": dict(zip(classes, probabilities.tolist(), strict=True)),
    }
