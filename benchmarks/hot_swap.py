"""What a model hot swap costs `/predict` latency in the real server (`sentiment serve`).

The server polls the registry every `SENTIMENT_RELOAD_INTERVAL_SECONDS` and, when the alias
`champion` moves, loads, verifies, compiles and warms up the new version, then swaps it in.
That work ran in a thread of the serving process, and held its GIL for about a second: p99 was
26x steady (about 220 ms, a ~300 ms stall per swap). It now runs in a child process
(serving/loader.py), which shares only the machine's cores; this benchmark measures what a
swap costs the requests being served.

Trains the default model into a temporary var dir and registers it twice (version 2 with the
classifier's C changed, so the artifacts differ but have the same vocabulary and size);
version 1 is champion. Starts the server with 1 worker, a reload interval of 0.5 s and JWT
auth, and drives `POST /predict` (one tweet, a valid bearer token) with
`wrk -t1 -c{concurrency} --latency` in two kinds of phase of `--duration` seconds each:

- steady: no promotion;
- swapping: a thread of this script promotes `champion` alternately to the other version
  `--swap-every` seconds after the server swapped in the previous one (`Registry.promote`,
  as `sentiment models promote` does), so loads never queue behind each other.

The two phases alternate `--runs` times (steady, swapping, steady, swapping, ...) so that the
noise between runs of the same phase is visible. Before each phase the server is serving the
current champion and has been left alone for a second. The swaps counted in a phase are the
server's own "serving model version" log lines within it; a swapping phase without any fails
the benchmark, as does any non-2xx response or socket error (wrk exits 0 even then). The time
from each promotion to the server's log line, which includes waiting up to one reload
interval for the next poll, is reported as the swap time.

Prints a table (req/s, p50, p99 and max latency, swaps, non-2xx, errors per phase and run)
and p99(swapping) over p99(steady), medians over runs; writes
benchmarks/results/hot_swap.json. As in benchmarks/serving.py, each phase opens its
connections anew and wrk 4.1 corrects for coordinated omission (a response slower than twice
a connection's mean interval also counts the requests that connection would have sent
meanwhile), so one stall weighs on p99 more than its own requests would; both kinds of phase
are measured the same way. Max is the slowest single response. The server logs one JSON line
per request to a file, as users run it. Run on an otherwise idle machine.

    python benchmarks/hot_swap.py [--duration 30] [--concurrency 8] [--swap-every 2] [--runs 2]

Needs `wrk` (Debian: `apt-get install wrk`). Takes about 2 x runs x duration seconds plus
~30 s of training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rich.console import Console
from rich.table import Table
from serving import (
    ROOT,
    TWEET,
    BenchmarkError,
    WrkResult,
    check_endpoints,
    isolated_environment,
    post_script,
    predict_token,
    run_wrk,
    train_into,
    wrk_version,
)

from sentiment_mlops.config import CHAMPION, ClassifierConfig, Settings, TrainConfig
from sentiment_mlops.runtime import configure_process
from sentiment_mlops.serving.launcher import ServerFailed, ServerProcess, server_env
from sentiment_mlops.train import DataSpec, fit, load_split

if TYPE_CHECKING:
    from sentiment_mlops.registry import Registry

SWAP_MESSAGE = "serving model version"  # logged by serving/models.py once a version is in
RELOAD_INTERVAL_S = 0.5
SETTLE_S = 1.0  # quiet time after the server serves the champion, before a phase starts
SWAP_WAIT_S = 60.0  # longest wait for the server to serve a promoted version
SECOND_C = 1.0  # the classifier's C for version 2 (the default config's is 10)

PhaseName = Literal["steady", "swapping"]


@dataclass(frozen=True)
class Promotion:
    version: int
    at: datetime  # when `promote` returned: the alias has moved
    seconds: float  # how long `promote` took in this process


@dataclass(frozen=True)
class Swap:
    version: int
    at: datetime  # the server's "serving model version" log line


@dataclass
class Cell:
    phase: PhaseName
    run: int
    result: WrkResult
    started: datetime
    ended: datetime
    promotions: list[Promotion] = field(default_factory=list)
    swaps: list[Swap] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        r = self.result
        no_swap = self.phase == "swapping" and not self.swaps
        return r.non_2xx > 0 or r.errors > 0 or r.requests == 0 or no_swap

    def swap_seconds(self) -> list[float]:
        """Per promotion in this phase, seconds until the server logged serving that version
        (the first such line after it); promotions never served are left out."""
        delays = []
        for promotion in self.promotions:
            served = [
                s.at for s in self.swaps if s.version == promotion.version and s.at >= promotion.at
            ]
            if served:
                delays.append((min(served) - promotion.at).total_seconds())
        return delays


def train_second(var: Path, console: Console) -> int:
    """Version 2: the default config with the classifier's C changed; not promoted."""
    from sentiment_mlops.registry import Registry  # imports mlflow: after configure_process()

    config = TrainConfig(classifier=ClassifierConfig(C=SECOND_C))
    spec = DataSpec()
    with console.status(f"training and registering a second version (C={SECOND_C:g})"):
        result = fit(load_split(spec, config), config, spec)
        return Registry(Settings(var_dir=var)).register_training(result).version


def server_swaps(server: ServerProcess) -> list[Swap]:
    """Every version change the server logged (its first load, with no previous version, is
    not a swap)."""
    return [
        Swap(int(r["model_version"]), datetime.fromisoformat(r["ts"]))
        for r in server.log_records()
        if r.get("msg") == SWAP_MESSAGE and r.get("previous_version") is not None
    ]


def wait_serving(server: ServerProcess, version: int) -> None:
    """Return once the server's latest model line names `version`, then after a quiet second."""
    deadline = time.monotonic() + SWAP_WAIT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchmarkError(f"the server exited:\n{server.tail()}")
        lines = [r for r in server.log_records() if r.get("msg") == SWAP_MESSAGE]
        if lines and int(lines[-1]["model_version"]) == version:
            time.sleep(SETTLE_S)
            return
        time.sleep(0.1)
    raise BenchmarkError(
        f"the server did not serve version {version} within {SWAP_WAIT_S:.0f} s:\n{server.tail()}"
    )


class Promoter:
    """A thread that moves `champion` to the other version `every` seconds after the server
    swapped in the previous promotion."""

    def __init__(
        self,
        server: ServerProcess,
        registry: Registry,
        versions: tuple[int, int],
        current: int,
        every: float,
    ) -> None:
        self._server = server
        self._registry = registry
        self._versions = versions
        self.current = current
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="promoter", daemon=True)
        self.promotions: list[Promotion] = []
        self.error: BaseException | None = None

    def __enter__(self) -> Promoter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise BenchmarkError(f"promoting failed: {self.error}") from self.error

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._every):
                first, second = self._versions
                target = second if self.current == first else first
                started = time.perf_counter()
                self._registry.promote(target, CHAMPION)
                seconds = time.perf_counter() - started
                self.current = target
                promoted = datetime.now(UTC)
                self.promotions.append(Promotion(target, promoted, seconds))
                wait_swapped(self._server, target, promoted, self._stop)
        except Exception as exc:  # re-raised by __exit__ in the main thread
            self.error = exc


def wait_swapped(
    server: ServerProcess, version: int, since: datetime, stop: threading.Event | None = None
) -> None:
    """Wait until the server logs serving `version` after `since` (or `stop` is set): each
    promotion is swapped in before the next, so loads never queue up behind each other and
    no swap spills into the next phase."""
    deadline = time.monotonic() + SWAP_WAIT_S
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            return
        if any(s.version == version and s.at >= since for s in server_swaps(server)):
            return
        time.sleep(0.1)
    raise BenchmarkError(f"the server did not serve version {version} within {SWAP_WAIT_S:.0f} s")


def measure(
    server: ServerProcess,
    registry: Registry,
    versions: tuple[int, int],
    script: Path,
    args: argparse.Namespace,
    console: Console,
) -> list[Cell]:
    """steady and swapping phases, alternating, `args.runs` times."""
    url = f"{server.url}/predict"
    champion = versions[0]
    cells = []
    for run in range(1, args.runs + 1):
        for phase in ("steady", "swapping"):
            wait_serving(server, champion)
            label = f"{phase} run {run}"
            promoter = Promoter(server, registry, versions, champion, args.swap_every)
            started = datetime.now(UTC)
            with console.status(f"{label}: {args.duration} s"):
                if phase == "swapping":
                    with promoter:
                        result = run_wrk(url, args.concurrency, args.duration, script)
                    champion = promoter.current
                    if promoter.promotions:  # its swap may still be loading
                        last = promoter.promotions[-1]
                        wait_swapped(server, last.version, last.at)
                else:
                    result = run_wrk(url, args.concurrency, args.duration, script)
            ended = datetime.now(UTC)
            swaps = [s for s in server_swaps(server) if started <= s.at <= ended]
            cell = Cell(phase, run, result, started, ended, promoter.promotions, swaps)
            cells.append(cell)
            console.print(
                f"{label}: {result.requests_per_s:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                f"p99 {result.p99_ms:.2f} ms, max {result.max_ms:.0f} ms, "
                f"{len(swaps)} swap(s) for {len(promoter.promotions)} promotion(s)",
                highlight=False,
            )
    wait_serving(server, champion)  # the last promotions' swap times, for the report
    for cell in cells:
        cell.swaps = [s for s in server_swaps(server) if cell.started <= s.at]
    return cells


def swaps_in_phase(cell: Cell) -> int:
    return sum(1 for s in cell.swaps if s.at <= cell.ended)


def swaps_column(cell: Cell) -> str:
    """Swaps logged in the phase, and for a swapping phase out of how many promotions."""
    swaps = swaps_in_phase(cell)
    return f"{swaps}/{len(cell.promotions)}" if cell.phase == "swapping" else str(swaps)


def results_table(cells: Sequence[Cell], concurrency: int) -> Table:
    table = Table(title=f"POST /predict under wrk -t1 -c{concurrency}, 1 worker, 127.0.0.1")
    columns = ("phase", "run", "req/s", "p50 ms", "p99 ms", "max ms", "swaps", "non-2xx")
    for column in (*columns, "errors", "result"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for cell in cells:
        r = cell.result
        table.add_row(
            cell.phase,
            str(cell.run),
            f"{r.requests_per_s:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.max_ms:.1f}",
            swaps_column(cell),
            str(r.non_2xx),
            str(r.errors),
            "[bold red]FAILED[/]" if cell.failed else "ok",
        )
    return table


def median_of(cells: Sequence[Cell], phase: PhaseName, value: str) -> float:
    return statistics.median(getattr(c.result, value) for c in cells if c.phase == phase)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=30, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, default=8, help="wrk connections")
    parser.add_argument(
        "--swap-every", type=float, default=2.0, help="seconds from a swap to the next promotion"
    )
    parser.add_argument("--runs", type=int, default=2, help="steady+swapping pairs")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured seconds of load first")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "hot_swap.json"
    )
    args = parser.parse_args()
    if args.duration <= 0 or args.concurrency <= 0 or args.runs <= 0 or args.warmup < 0:
        parser.error("--duration, --concurrency and --runs must be positive, --warmup not negative")
    if not RELOAD_INTERVAL_S < args.swap_every < args.duration:
        parser.error(
            f"--swap-every must lie between the reload interval ({RELOAD_INTERVAL_S} s) "
            "and --duration"
        )
    return args


def main() -> int:
    configure_process()  # also what the server subprocess inherits (server_env)
    args = parse_args()
    console = Console(width=None if sys.stdout.isatty() else 120)
    if shutil.which("wrk") is None:
        raise BenchmarkError("wrk is not installed: `apt-get install wrk`")
    planned_s = args.warmup + 2 * args.runs * (args.duration + SETTLE_S)
    body = json.dumps({"text": TWEET})
    with tempfile.TemporaryDirectory(prefix="bench-hot-swap-") as name:
        tmp = Path(name)
        var = tmp / "var"
        secret = secrets.token_urlsafe(36)  # 48 characters
        env = server_env(
            var,
            jwt_secret=secret,
            shutdown_grace_seconds=0.5,
            reload_interval_seconds=RELOAD_INTERVAL_S,
        )
        with isolated_environment(env):
            from sentiment_mlops.registry import Registry

            versions = (train_into(var, console), train_second(var, console))
            registry = Registry(Settings(var_dir=var))
            registry.promote(versions[0], CHAMPION)
            token = predict_token(var, secret, 2 * planned_s)
        console.print(f"model versions {versions[0]} (champion) and {versions[1]} registered")
        script = tmp / "predict.lua"
        script.write_text(post_script(body, token))
        with ServerProcess(env, tmp / "server.log", workers=1) as server:
            with console.status("starting the server with 1 worker"):
                try:
                    server.wait_ready()
                except ServerFailed as exc:
                    raise BenchmarkError(str(exc)) from exc
            check_endpoints(server.url, body, token)
            if args.warmup > 0:
                with console.status(f"warming up /predict for {args.warmup} s"):
                    run_wrk(f"{server.url}/predict", args.concurrency, args.warmup, script)
            cells = measure(server, registry, versions, script, args, console)
    steady_p99 = median_of(cells, "steady", "p99_ms")
    swapping_p99 = median_of(cells, "swapping", "p99_ms")
    ratio = swapping_p99 / steady_p99 if steady_p99 > 0 else float("inf")
    delays = [d for c in cells for d in c.swap_seconds()]
    promote_s = [p.seconds for c in cells for p in c.promotions]
    console.print(results_table(cells, args.concurrency))
    console.print(
        f"p99 swapping ÷ p99 steady (medians over {args.runs} run(s)): "
        f"{swapping_p99:.2f} ms ÷ {steady_p99:.2f} ms = [bold]{ratio:.2f}[/]",
        highlight=False,
    )
    if delays:
        console.print(
            f"promotion → server serving it ({len(delays)} swaps, includes up to "
            f"{RELOAD_INTERVAL_S} s waiting for the poll): "
            f"median {statistics.median(delays):.2f} s, max {max(delays):.2f} s; "
            "promote() itself: median "
            f"{statistics.median(promote_s) * 1000:.0f} ms",
            highlight=False,
        )
    result = {
        "tool": wrk_version(),
        "command": "wrk -t1 -cC -dDs --latency (POST body and headers from a Lua script)",
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        "swap_every_s": args.swap_every,
        "reload_interval_s": RELOAD_INTERVAL_S,
        "runs": args.runs,
        "workers": 1,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": list(versions),
        "p99_steady_ms": steady_p99,
        "p99_swapping_ms": swapping_p99,
        "p99_ratio": ratio,
        "swap_seconds": delays,
        "promote_seconds": promote_s,
        "cells": [
            {
                "phase": c.phase,
                "run": c.run,
                **asdict(c.result),
                "errors": c.result.errors,
                "promotions": len(c.promotions),
                "swaps": swaps_in_phase(c),
                "swap_seconds": c.swap_seconds(),
                "failed": c.failed,
            }
            for c in cells
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    console.print(f"wrote {args.out}")
    failed = [c for c in cells if c.failed]
    if failed:
        console.print(
            f"[bold red]{len(failed)} cell(s) failed[/]: non-2xx responses, errors, "
            "or a swapping phase without any swap"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
