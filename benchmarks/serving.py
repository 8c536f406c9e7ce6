"""Throughput and latency of the HTTP API (`sentiment serve`), measured with wrk on loopback.

Trains the default model into a temporary var dir, starts the real server as a subprocess on
127.0.0.1 and drives it with `wrk -t1 --latency` (one load-generator thread; it shares the
machine's cores with the server, as on a 2-core box):

- `GET /constant` of a bare FastAPI app (benchmarks/constant_app.py) under the same uvicorn
  options, one worker: the HTTP ceiling, measured in the same run;
- `GET /health` and `POST /predict` (valid bearer token, JSON body of one tweet) with 1 worker
  at concurrencies 1, 8, 32, 64;
- `POST /predict` with 2 workers at concurrencies 1 and 32 (c=1 shows whether every request
  pays a Nagle / delayed-ACK delay, as multi-worker servers without TCP_NODELAY do).

Each cell runs `--duration` seconds (default 5) after an unmeasured warm-up per endpoint; a full
run takes about 2 minutes. Per cell: requests/s, p50 and p99 latency and their ratio, non-2xx
responses and socket errors. Run it on an otherwise idle machine: wrk and the server share its
cores. wrk exits 0 even when every response is a 500, so a cell with any non-2xx response or
socket error is reported as FAILED (and the script exits 1). Prints a table and the
throughput of `/predict` over `/health` and over the constant app per concurrency, and writes
benchmarks/results/serving.json.

Each cell opens its connections anew, and wrk 4.1 corrects for coordinated omission: a
response slower than twice a connection's mean interval also counts the requests that
connection would have sent meanwhile. So the first request of each connection, which waits
until the server accepts the connection, weighs on p99: with uvloop accepting one connection
per loop turn, that alone made `/predict` p99 at c=64 0.5-1.3 s (see `server.event_loop`).

The server runs as users run it, logging one JSON line per request to stdout; here stdout goes
to a file in the temporary dir (bytes logged per request are in the JSON). That logging is part
of what is measured.

    python benchmarks/serving.py [--duration 5] [--concurrency 1 8 32 64]

Needs `wrk` (Debian: `apt-get install wrk`; `make bench-serving` installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from sentiment_mlops.config import Settings, TrainConfig
from sentiment_mlops.runtime import configure_process
from sentiment_mlops.serving.launcher import (
    HOST,
    ServerFailed,
    ServerProcess,
    free_port,
    server_env,
)
from sentiment_mlops.serving.tokens import Authenticator
from sentiment_mlops.train import DataSpec, fit, load_split

ROOT = Path(__file__).resolve().parents[1]
CONSTANT = "/constant"  # the bare app's endpoint (benchmarks/constant_app.py)
TWEET = (
    "@united 3 hours on the tarmac at ORD, no updates, no water, and now I missed my "
    "connection to SFO. Worst airline ever \U0001f621 #neveragain http://t.co/x7Qa2LmZ"
)
UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
WRK_TIMEOUT_S = 10


class BenchmarkError(RuntimeError):
    """The benchmark could not run as set up; the message says what to fix."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: dict[str, int]

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())


@dataclass(frozen=True)
class Cell:
    endpoint: str
    workers: int
    concurrency: int
    result: WrkResult
    log_bytes_per_request: float

    @property
    def failed(self) -> bool:
        return self.result.non_2xx > 0 or self.result.errors > 0 or self.result.requests == 0

    @property
    def tail_ratio(self) -> float:
        """p99 ÷ p50: how much longer the slowest requests wait than the typical one."""
        return self.result.p99_ms / self.result.p50_ms if self.result.p50_ms > 0 else 0.0


def _duration_s(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def parse_wrk(output: str) -> WrkResult:
    """Read the numbers from `wrk --latency` output; raises BenchmarkError if any is missing."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchmarkError(f"wrk output lacks /{pattern}/:\n{output}")
        return match

    def percentile_ms(p: int) -> float:
        match = find(rf"^\s*{p}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$")
        return float(match[1]) * UNIT_MS[match[2]]

    done = find(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),")
    # Thread Stats: Latency avg, stdev, max (+/- stdev).
    latency = find(r"^\s*Latency[ \t]+[\d.]+\w+[ \t]+[\d.]+\w+[ \t]+([\d.]+)(us|ms|s|m|h)\b")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    kinds = ("connect", "read", "write", "timeout")
    return WrkResult(
        requests=int(done[1]),
        seconds=_duration_s(done[2], done[3]),
        requests_per_s=float(find(r"^Requests/sec:\s+([\d.]+)")[1]),
        p50_ms=percentile_ms(50),
        p99_ms=percentile_ms(99),
        max_ms=float(latency[1]) * UNIT_MS[latency[2]],
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors={k: int(errors[i + 1]) if errors else 0 for i, k in enumerate(kinds)},
    )


def lua_string(text: str) -> str:
    """A double-quoted Lua literal for ASCII `text` (LuaJIT has no \\uXXXX escapes)."""
    if not text.isascii() or any(ord(c) < 32 for c in text):
        raise ValueError("only printable ASCII is quoted here; JSON-encode with ensure_ascii")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def post_script(body: str, token: str) -> str:
    return "\n".join(
        [
            'wrk.method = "POST"',
            f"wrk.body = {lua_string(body)}",
            'wrk.headers["Content-Type"] = "application/json"',
            f'wrk.headers["Authorization"] = {lua_string("Bearer " + token)}',
            "",
        ]
    )


def run_wrk(url: str, concurrency: int, seconds: int, script: Path | None) -> WrkResult:
    """One wrk run; wrk takes whole seconds only."""
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency"]
    command += ["--timeout", f"{WRK_TIMEOUT_S}s"]
    if script is not None:
        command += ["-s", str(script)]
    done = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise BenchmarkError(f"{' '.join(command)} exited {done.returncode}: {output}")
    return parse_wrk(done.stdout)


@contextmanager
def isolated_environment(env: dict[str, str]) -> Iterator[None]:
    """Run in-process training and minting with exactly the settings the server gets."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def check_endpoints(url: str, body: str, token: str) -> None:
    """One request each before load: wrong setup should fail here, not as 100% non-2xx."""
    health = httpx.get(f"{url}/health", timeout=5)
    predict = httpx.post(
        f"{url}/predict",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        timeout=5,
    )
    for name, response in (("GET /health", health), ("POST /predict", predict)):
        if response.status_code != 200:
            raise BenchmarkError(f"{name} answered {response.status_code}: {response.text}")
    if "label" not in predict.json():
        raise BenchmarkError(f"POST /predict answered without a label: {predict.text}")


@dataclass(frozen=True)
class Phase:
    workers: int
    endpoints: dict[str, Sequence[int]]


def run_phase(
    phase: Phase,
    env: dict[str, str],
    tmp: Path,
    body: str,
    token: str,
    args: argparse.Namespace,
    console: Console,
) -> list[Cell]:
    script = tmp / "predict.lua"
    script.write_text(post_script(body, token))
    scripts: dict[str, Path | None] = {"/health": None, "/predict": script}
    log_path = tmp / f"server-{phase.workers}w.log"
    with ServerProcess(env, log_path, phase.workers) as server:
        with console.status(f"starting the server with {phase.workers} worker(s)"):
            try:
                server.wait_ready()
            except ServerFailed as exc:
                raise BenchmarkError(str(exc)) from exc
        check_endpoints(server.url, body, token)
        return measure(server.url, phase, scripts, log_path, args, console)


def measure(
    url: str,
    phase: Phase,
    scripts: dict[str, Path | None],
    log_path: Path,
    args: argparse.Namespace,
    console: Console,
) -> list[Cell]:
    """wrk on each endpoint of `phase` at each of its concurrencies, after a warm-up."""
    cells = []
    for endpoint, concurrencies in phase.endpoints.items():
        if args.warmup > 0:
            with console.status(f"warming up {endpoint} for {args.warmup} s"):
                run_wrk(f"{url}{endpoint}", max(concurrencies), args.warmup, scripts[endpoint])
        for concurrency in concurrencies:
            label = f"{endpoint} workers={phase.workers} c={concurrency}"
            before = log_path.stat().st_size
            with console.status(f"{label}: {args.duration} s"):
                result = run_wrk(f"{url}{endpoint}", concurrency, args.duration, scripts[endpoint])
            logged = log_path.stat().st_size - before
            per_request = logged / result.requests if result.requests else 0.0
            cells.append(Cell(endpoint, phase.workers, concurrency, result, per_request))
            console.print(
                f"{label}: {result.requests_per_s:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                f"p99 {result.p99_ms:.2f} ms",
                highlight=False,
            )
    return cells


@contextmanager
def constant_server(env: dict[str, str], log_path: Path, workers: int = 1) -> Iterator[str]:
    """benchmarks/constant_app.py with `workers` on a free loopback port, ready; yields its
    URL."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    app = ROOT / "benchmarks" / "constant_app.py"
    command = [sys.executable, str(app), str(port), str(workers)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"{url}{CONSTANT}"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise BenchmarkError(f"the constant app did not start:\n{tail}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def run_constant(
    concurrencies: Sequence[int],
    env: dict[str, str],
    tmp: Path,
    args: argparse.Namespace,
    console: Console,
) -> list[Cell]:
    log_path = tmp / "constant.log"
    phase = Phase(1, {CONSTANT: concurrencies})
    with constant_server(env, log_path) as url:
        return measure(url, phase, {CONSTANT: None}, log_path, args, console)


def train_into(
    var: Path,
    console: Console,
    config: TrainConfig | None = None,
    spec: DataSpec | None = None,
) -> int:
    """Train (the default model on the built-in data unless told) and register it in `var`'s
    store; returns its version."""
    from sentiment_mlops.registry import Registry  # imports mlflow: after configure_process()

    config, spec = config or TrainConfig(), spec or DataSpec()
    with console.status(f"training and registering a model on {spec.describe()}"):
        result = fit(load_split(spec, config), config, spec)
        return Registry(Settings(var_dir=var)).register_training(result).version


def predict_token(var: Path, secret: str, planned_s: float) -> str:
    """A `predict` token signed with `secret` that outlives a run planned for `planned_s`."""
    settings = Settings(var_dir=var, jwt_secret=SecretStr(secret))
    return Authenticator.from_settings(settings).mint("bench", ["predict"], int(planned_s) + 600)


def results_table(cells: Sequence[Cell]) -> Table:
    table = Table(title="HTTP API under wrk -t1 on 127.0.0.1")
    columns = ("endpoint", "workers", "concurrency", "req/s", "p50 ms", "p99 ms", "p99÷p50")
    for column in (*columns, "non-2xx", "errors", "result"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for cell in cells:
        r = cell.result
        table.add_row(
            f"{cell.endpoint} (bare app)" if cell.endpoint == CONSTANT else cell.endpoint,
            str(cell.workers),
            str(cell.concurrency),
            f"{r.requests_per_s:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{cell.tail_ratio:.1f}",
            str(r.non_2xx),
            str(r.errors),
            "[bold red]FAILED[/]" if cell.failed else "ok",
        )
    return table


def throughput_ratios(cells: Sequence[Cell]) -> list[dict[str, float]]:
    """`/predict` requests/s over `/health`'s and over the constant app's, with 1 worker, per
    concurrency measured for all three."""
    one = {(c.endpoint, c.concurrency): c.result.requests_per_s for c in cells if c.workers == 1}
    ratios = []
    for concurrency in sorted({c for _, c in one}):
        predict, health = one.get(("/predict", concurrency)), one.get(("/health", concurrency))
        constant = one.get((CONSTANT, concurrency))
        if predict is not None and health and constant:
            ratios.append(
                {
                    "concurrency": concurrency,
                    "over_health": predict / health,
                    "over_constant": predict / constant,
                }
            )
    return ratios


def ratio_table(ratios: Sequence[dict[str, float]]) -> Table:
    table = Table(title="/predict throughput over /health and over the bare app (1 worker)")
    for column in ("concurrency", "÷ /health", "÷ bare app"):
        table.add_column(column, justify="right")
    for row in ratios:
        table.add_row(
            str(int(row["concurrency"])), f"{row['over_health']:.2f}", f"{row['over_constant']:.2f}"
        )
    return table


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).splitlines()[0].strip()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per cell")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured seconds per endpoint")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--multi-workers", type=int, default=2)
    parser.add_argument("--multi-worker-concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving.json"
    )
    args = parser.parse_args()
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    return args


def main() -> int:
    configure_process()  # also what the server subprocesses inherit (server_env)
    args = parse_args()
    console = Console(width=None if sys.stdout.isatty() else 120)
    if shutil.which("wrk") is None:
        raise BenchmarkError("wrk is not installed: `apt-get install wrk` (or make bench-serving)")
    phases = [
        Phase(1, {"/health": args.concurrency, "/predict": args.concurrency}),
        Phase(args.multi_workers, {"/predict": args.multi_worker_concurrency}),
    ]
    planned_s = (
        sum(len(cs) * args.duration + args.warmup for p in phases for cs in p.endpoints.values())
        + len(args.concurrency) * args.duration
    )
    body = json.dumps({"text": TWEET})
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as name:
        tmp = Path(name)
        var = tmp / "var"
        secret = secrets.token_urlsafe(36)  # 48 characters
        env = server_env(var, jwt_secret=secret, shutdown_grace_seconds=0.5)
        with isolated_environment(env):
            version = train_into(var, console)
            token = predict_token(var, secret, 2 * planned_s)
        console.print(f"model version {version} trained and registered in a temporary store")
        cells = run_constant(args.concurrency, env, tmp, args, console)
        for phase in phases:
            cells += run_phase(phase, env, tmp, body, token, args, console)
    ratios = throughput_ratios(cells)
    console.print(results_table(cells))
    console.print(ratio_table(ratios))
    logged = [c.log_bytes_per_request for c in cells if c.endpoint != CONSTANT]
    console.print(
        f"server log: {min(logged):.0f}-{max(logged):.0f} bytes per request (one JSON line "
        "each, written to a file), included in every number above",
        highlight=False,
    )
    result = {
        "tool": wrk_version(),
        "command": "wrk -t1 -cC -dDs --latency (POST body and headers from a Lua script)",
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "body": body,
        "cells": [
            {
                "endpoint": c.endpoint,
                "workers": c.workers,
                "concurrency": c.concurrency,
                **asdict(c.result),
                "errors": c.result.errors,
                "p99_over_p50": c.tail_ratio,
                "log_bytes_per_request": c.log_bytes_per_request,
                "failed": c.failed,
            }
            for c in cells
        ],
        "predict_throughput_ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    console.print(f"wrote {args.out}")
    failed = [c for c in cells if c.failed]
    if failed:
        console.print(f"[bold red]{len(failed)} cell(s) failed[/]: non-2xx responses or errors")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
