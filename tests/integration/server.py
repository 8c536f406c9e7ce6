"""Start the real server as a subprocess on 127.0.0.1 and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from sentiment_mlops.config import Settings, TrainConfig
from sentiment_mlops.registry import Registry
from sentiment_mlops.train import DataSpec, fit, load_split

SECRET = "integration-tests-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train_into(var: Path, config: TrainConfig | None = None, alias: str | None = None) -> int:
    """Train the default model on the built-in data and register it in `var`'s store."""
    config, spec = config or TrainConfig(), DataSpec()
    registry = Registry(Settings(var_dir=var))
    result = fit(load_split(spec, config), config, spec)
    return registry.register_training(result, alias).version


def base_env(var: Path, **settings: object) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SENTIMENT_")
        and k not in {"MLFLOW_TRACKING_URI", "PROMETHEUS_MULTIPROC_DIR"}
    }
    env.update(
        {
            "SENTIMENT_VAR_DIR": str(var),
            "SENTIMENT_JWT_SECRET": SECRET,
            "SENTIMENT_SHUTDOWN_GRACE_SECONDS": "0.5",
        }
    )
    env.update({f"SENTIMENT_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class Server:
    """`sentiment serve` in a subprocess; its JSON log lines are kept in `log_path`."""

    def __init__(self, var: Path, log_path: Path, workers: int = 1, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = base_env(var, **settings)
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sentiment_mlops.cli",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records
