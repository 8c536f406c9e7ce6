"""Process-level behaviour: several workers sharing metrics, and graceful shutdown."""

from __future__ import annotations

import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sklearn.pipeline import Pipeline

from ..apps import mint
from .server import register_into, start_server


@pytest.fixture(scope="module")
def var(tmp_path_factory: pytest.TempPathFactory, default_model: Pipeline) -> Path:
    var = tmp_path_factory.mktemp("procs") / "var"
    register_into(var, default_model)
    return var


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_workers_count_every_request_once(var: Path, tmp_path: Path) -> None:
    srv = start_server(var, tmp_path / "workers.log", workers=2)
    headers = {"Authorization": f"Bearer {mint('predict')}"}

    def send(i: int) -> bool:
        """A new connection each time, so the kernel can hand it to either worker."""
        response = httpx.post(f"{srv.url}/predict", json={"text": f"great {i}"}, headers=headers)
        return response.status_code == 200

    def pids() -> set[int]:
        return {r["pid"] for r in srv.log_records() if r.get("route") == "/predict"}

    sent = 0
    try:
        srv.wait_ready()
        with ThreadPoolExecutor(8) as pool:
            while sent < 2000 and (sent == 0 or len(pids()) < 2):
                assert all(pool.map(send, range(sent, sent + 100)))
                sent += 100
                time.sleep(0.2)
        first = httpx.get(f"{srv.url}/metrics").text
        second = httpx.get(f"{srv.url}/metrics").text
    finally:
        srv.stop()
    assert len(pids()) == 2, "both workers should have served requests"
    parent = [r for r in srv.log_records() if r.get("logger") == "uvicorn.error"]
    assert any("Started parent process" in r["msg"] for r in parent), "the parent logs as JSON"
    assert not [r["msg"] for r in parent if "died" in r["msg"]], "no worker was killed"
    for text in (first, second):
        assert metric_sum(text, "http_requests_total", route="/predict", status="200") == sent
        assert metric_sum(text, "model_predictions_total", model_version="1") == sent


def test_sigterm_drains_then_finishes_requests_in_flight(var: Path, tmp_path: Path) -> None:
    srv = start_server(var, tmp_path / "drain.log", shutdown_grace_seconds=3)
    srv.wait_ready()
    body = b'{"text": "the crew was lovely and the seats were comfy"}'
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {mint('predict')}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    in_flight = socket.create_connection(("127.0.0.1", srv.port))
    in_flight.sendall(head + body[:10])
    time.sleep(0.2)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    ready = httpx.get(f"{srv.url}/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    assert httpx.get(f"{srv.url}/health").status_code == 200
    still_serving = httpx.post(
        f"{srv.url}/predict",
        json={"text": "fine"},
        headers={"Authorization": f"Bearer {mint('predict')}"},
    )
    assert still_serving.status_code == 200
    time.sleep(3.0)  # past the grace period: uvicorn is now shutting down
    in_flight.sendall(body[10:])
    received = b""
    while chunk := in_flight.recv(65536):  # the server closes the connection when done
        received += chunk
    in_flight.close()
    response = received.decode()
    assert response.startswith("HTTP/1.1 200"), response
    assert '"model_version":1' in response
    srv.proc.wait(timeout=30)
    srv.stop()
    assert any(r.get("msg") == "SIGTERM: draining" for r in srv.log_records())
