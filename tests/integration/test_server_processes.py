"""Process-level behaviour: several workers sharing metrics, a worker's death, and graceful
shutdown."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import Settings
from sentiment_mlops.registry import Registry
from sentiment_mlops.serving.prediction_log import BATCH_ROWS

from ..apps import mint
from .server import register_into, serving, start_server, wait_for, worker_pids


@pytest.fixture(scope="module")
def var(tmp_path_factory: pytest.TempPathFactory, default_model: Pipeline) -> Path:
    """Version 1 (champion) and version 2, the same model, to promote."""
    var = tmp_path_factory.mktemp("procs") / "var"
    register_into(var, default_model)
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


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_two_workers_count_every_request_once_and_a_killed_one_is_logged_and_forgotten(
    var: Path, tmp_path: Path
) -> None:
    """One two-worker server, two stories. First, both workers serve and /metrics counts each
    request once. Then a worker is SIGKILLed: it used to be replaced with only "Child process
    [pid] died" in the log, and its `model_info` stayed in /metrics (after a promotion,
    versions 1 and 2 both showed 1). It is killed while the prediction log's database is
    locked and both workers hold predictions in their queues: the rows it took with it are
    counted (`prediction_log_dropped_total{reason="worker_died"}`), where before 57 of 50,504
    answered predictions vanished with nothing counted."""
    srv = start_server(var, tmp_path / "workers.log", workers=2, reload_interval_seconds=1)
    registry = Registry(Settings(var_dir=var))
    headers = {"Authorization": f"Bearer {mint('predict')}"}

    def send(i: int) -> bool:
        """A new connection each time, so the kernel can hand it to either worker."""
        response = httpx.post(f"{srv.url}/predict", json={"text": f"great {i}"}, headers=headers)
        return response.status_code == 200

    def pids() -> set[int]:
        return {r["pid"] for r in srv.log_records() if r.get("route") == "/predict"}

    def answered_by(pid: int) -> int:
        return sum(1 for r in srv.log_records() if r.get("route") == "/predict" and r["pid"] == pid)

    def queued_total() -> float:
        text = httpx.get(f"{srv.url}/metrics").text
        return sum(value for _, value in samples(text, "prediction_log_queue_depth"))

    sent = 0
    try:
        srv.wait_ready()
        # Under CPU load a worker's first load can outlast the startup wait, and a worker
        # listening without its model answers 503: every request here must find a model.
        wait_for("two workers serving", lambda: len(serving(srv, 1)) == 2)
        with ThreadPoolExecutor(8) as pool:
            while sent < 2000 and (sent == 0 or len(pids()) < 2):
                assert all(pool.map(send, range(sent, sent + 100)))
                sent += 100
                time.sleep(0.2)
        counted = [httpx.get(f"{srv.url}/metrics").text for _ in range(2)]
        counted_sent = sent
        before_kill = srv.log_records()

        workers = worker_pids(srv)
        assert serving(srv, 1) == workers
        victim = min(workers)
        locker = sqlite3.connect(var / "predictions.db", isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")  # the workers' writes wait: their queues fill
            answered_before = answered_by(victim)
            with ThreadPoolExecutor(8) as pool:
                while sent < 6000 and answered_by(victim) < answered_before + 50:
                    assert all(pool.map(send, range(sent, sent + 100)))
                    sent += 100
            os.kill(victim, signal.SIGKILL)
            replacement = wait_for("a replacement", lambda: worker_pids(srv) - workers)
        finally:
            locker.rollback()
            locker.close()
        wait_for("the replacement serving", lambda: replacement <= serving(srv, 1))
        wait_for("the queues written", lambda: queued_total() == 0)
        after_kill = httpx.get(f"{srv.url}/metrics").text
        with sqlite3.connect(var / "predictions.db") as reader:
            (rows,) = reader.execute("SELECT count(*) FROM predictions").fetchone()
        registry.promote(2, "champion")
        live = worker_pids(srv)
        wait_for("live workers on version 2", lambda: live <= serving(srv, 2))
        shared = "metrics shared through a folder"
        (folder,) = [r["folder"] for r in srv.log_records() if r.get("msg") == shared]
        gauge_files = sorted(p.name for p in Path(folder).glob("gauge_*.db"))
        text = httpx.get(f"{srv.url}/metrics").text
    finally:
        srv.stop()
        registry.promote(1, "champion")

    assert len(pids()) >= 2, "both workers should have served requests"
    parent = [r for r in before_kill if r.get("logger") == "uvicorn.error"]
    assert any("Started parent process" in r["msg"] for r in parent), "the parent logs as JSON"
    assert not [r for r in before_kill if r.get("msg") == "worker died"], "no worker was killed"
    for counts in counted:
        assert (
            metric_sum(counts, "http_requests_total", route="/predict", status="200")
            == counted_sent
        )
        assert metric_sum(counts, "model_predictions_total", model_version="1") == counted_sent

    dropped = {
        labels["reason"]: value
        for labels, value in samples(after_kill, "prediction_log_dropped_total")
    }
    lost = sent - rows
    assert lost > 0, "the killed worker held rows in its queue"
    assert dropped.get("worker_died", 0) >= lost, (dropped, lost)
    assert sum(dropped.values()) - lost <= BATCH_ROWS, "an upper bound by at most one batch"
    info = {labels["model_version"]: value for labels, value in samples(text, "model_info")}
    assert info == {"1": 0.0, "2": 1.0}
    live_gauges = [f"gauge_{mode}_{pid}.db" for pid in live for mode in ("livemax", "livesum")]
    assert gauge_files == sorted(live_gauges)
    assert samples(text, "server_worker_restarts_total") == [({"cause": "SIGKILL"}, 1.0)]
    records = srv.log_records()
    (death,) = [r for r in records if r.get("msg") == "worker died"]
    assert death["worker_pid"] == victim and death["signal"] == "SIGKILL"
    assert death["predictions_lost"] == dropped["worker_died"]
    assert death["exit_code"] is None and death["level"] == "error"
    (restart,) = [r for r in records if r.get("msg") == "worker restarted"]
    assert restart["replaced_pid"] == victim and restart["restarts"] == 1
    assert {restart["worker_pid"]} == replacement


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
