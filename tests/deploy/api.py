"""Driving the real API in the monitoring tests: predictions and feedback over HTTP."""

from __future__ import annotations

from typing import Any

import httpx

from sentiment_mlops.serving.launcher import ServerProcess

from ..apps import bearer
from ..integration.server import wait_for


def predict(api: ServerProcess, text: str) -> dict[str, Any]:
    """POST /predict, retried while it answers 503: `/ready` answered from one worker, and
    another may still be loading its model."""
    headers = bearer("predict")

    def answered() -> dict[str, Any] | None:
        response = httpx.post(f"{api.url}/predict", json={"text": text}, headers=headers)
        assert response.status_code in (200, 503), f"{response.text}\n{api.tail()}"
        return response.json() if response.status_code == 200 else None

    answer: dict[str, Any] = wait_for("a prediction", answered)
    return answer


def give_feedback(api: ServerProcess, prediction_id: str, label: str) -> None:
    """POST /feedback, retried while the prediction still waits to be written: 503 from the
    worker that holds it in its queue, 404 "yet" from another worker."""
    headers = bearer("feedback")

    def joined() -> bool:
        body = {"prediction_id": prediction_id, "label": label}
        response = httpx.post(f"{api.url}/feedback", json=body, headers=headers)
        waiting = response.status_code == 503 or (
            response.status_code == 404 and "yet" in response.text
        )
        assert response.status_code == 200 or waiting, f"{response.text}\n{api.tail()}"
        return response.status_code == 200

    wait_for("the feedback joined to its prediction", joined)


def has_feedback(api: ServerProcess) -> bool:
    """Whether this API takes POST /feedback (the prediction log)."""
    return "/feedback" in httpx.get(f"{api.url}/openapi.json").json()["paths"]
