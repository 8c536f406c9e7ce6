"""Start `sentiment serve` as a child process on loopback and wait until it is ready.

The process-level tests and the benchmarks both need the server exactly as users run it (a
process, its workers, its signals), started with a clean environment so a developer's own
`SENTIMENT_*` settings or MLflow store never leak in. Readiness is polled with the standard
library so that this module adds no dependency to the serving install.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"
INHERITED = ("SENTIMENT_", "MLFLOW_TRACKING_URI", "PROMETHEUS_MULTIPROC_DIR")


class ServerFailed(RuntimeError):
    """The server exited or never became ready; the message ends with its log's tail."""


def free_port(host: str = HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def probe(url: str, timeout: float) -> str | None:
    """None when `url` answers 200 within `timeout` seconds, else what happened instead
    (`sentiment health`, a container's HEALTHCHECK, and `wait_ready` ask this)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return None if response.status == 200 else f"status {response.status}"
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode(errors="replace").strip()
        return f"status {exc.code}" + (f": {detail}" if detail else "")
    except urllib.error.URLError as exc:
        return str(exc.reason)
    except OSError as exc:  # a timeout or reset while reading the answer
        return str(exc) or type(exc).__name__


def server_env(var: Path, **settings: object) -> dict[str, str]:
    """This process's environment without our settings, plus `SENTIMENT_VAR_DIR` and
    `SENTIMENT_<NAME>` for each keyword (e.g. `jwt_secret=...`, `workers=2`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED)}
    env["SENTIMENT_VAR_DIR"] = str(var)
    env.update({f"SENTIMENT_{name.upper()}": str(value) for name, value in settings.items()})
    return env


class ServerProcess:
    """`sentiment serve` on a free loopback port; its stdout and stderr go to `log_path`.

    `max_open_files` sets the server's open-file limit (soft and hard), as a container would.
    """

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        workers: int = 1,
        max_open_files: int | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        command = [sys.executable, "-m", "sentiment_mlops.cli", "serve", "--host", HOST]
        limit_open_files = None
        if max_open_files is not None:
            limit = (max_open_files, max_open_files)
            limit_open_files = functools.partial(resource.setrlimit, resource.RLIMIT_NOFILE, limit)
        self.proc = subprocess.Popen(
            [*command, "--port", str(self.port), "--workers", str(workers)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=limit_open_files,
        )

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Return once `/ready` answers 200; ServerFailed if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            if probe(f"{self.url}/ready", timeout=1) is None:
                return
            time.sleep(0.2)
        raise ServerFailed(f"server not ready after {timeout:.0f} s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` (uvicorn drains and stops its workers on SIGTERM); SIGKILL after
        `timeout` seconds. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def log_records(self) -> list[dict[str, Any]]:
        """The server's JSON log lines so far (other output skipped)."""
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records
