"""`sentiment serve` beside its peers, in one run, on the same model and the same texts.

Trains the default pipeline with C = 4 on SST-2 (GLUE phrases; the shared data folder, else the
built-in tweets with `--data builtin`), registers it in a temporary store, and loads each
server with `wrk -t1 --latency` on 127.0.0.1, with 1 and 2 workers, at c = 1, 8, 64:

- the ceiling: benchmarks/constant_app.py, FastAPI answering a constant under the uvicorn
  options `sentiment serve` uses;
- a plain FastAPI app calling sklearn's `predict_proba` (benchmarks/peers/fastapi_app.py);
- `mlflow models serve -m models:/<name>/<version> --env-manager local` on the registered
  version itself, in the project's store (its MLmodel describes the sklearn flavour);
- a BentoML service wrapping the same pipeline (benchmarks/peers/bentoml_service.py);
- `sentiment serve` as users run it: bearer-token auth, routing by configs/routing.yaml, the
  prediction log (SQLite), Prometheus metrics and one JSON access-log line per request;
- with one worker only (`ONE_WORKER`): ours with auth off, with an A/B split, with a challenger
  in shadow (each row's time per request minus ours: what the feature costs), and the batch
  forms, ours (/predict/batch) and MLflow's (a list of inputs), 32 and 256 texts a request.

Every request body is one of the test set's texts, in turn (1,821 SST-2 test sentences). Each
peer runs in a virtualenv of its own under var/bench-peers/ (git-ignored), installed here on
first use with the project's uv (`make bench-peers` installs it), else venv + pip: the
project's own versions of scikit-learn, skops, numpy, scipy, FastAPI and uvicorn, MLflow at
the project's mlflow-skinny version, and BentoML at `BENTOML_VERSION`. None of them is a
dependency of the project. A peer that cannot be installed or started is reported as
"skipped: <reason>" and the rest still run.

Before each server is loaded, every test text is sent to it once and its label compared with
sklearn's `predict` on the same pipeline in this process. Any disagreement, any non-2xx
response and any socket error (wrk exits 0 even when all responses are 500s) makes the run
exit 1. Prints one table with each server's requests/s over the ceiling's and ours over each
peer's at the same workers and concurrency, and writes benchmarks/results/peers.json.

    python benchmarks/peers.py [--seconds 10] [--workers 1 2] [--concurrency 1 8 64]

Run it on an otherwise idle machine (wrk and the servers share its cores); 10 s per cell, the
whole run with installed peers takes about 12 minutes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from accuracy import SST2_TEST, SST2_TRAIN
from rich.console import Console
from rich.table import Table
from serving import (
    ROOT,
    BenchmarkError,
    WrkResult,
    constant_server,
    isolated_environment,
    lua_string,
    predict_token,
    run_wrk,
    train_into,
    wrk_version,
)

from sentiment_mlops.config import ClassifierConfig, Settings, TrainConfig
from sentiment_mlops.runtime import configure_process
from sentiment_mlops.serving.launcher import (
    HOST,
    ServerFailed,
    ServerProcess,
    free_port,
    probe,
    server_env,
)
from sentiment_mlops.train import DataSpec, load_split

PEERS_DIR = ROOT / "var" / "bench-peers"
PEER_APPS = ROOT / "benchmarks" / "peers"
UV = ROOT / ".venv-uv" / "bin" / "uv"
BENTOML_VERSION = "1.4.40"
C = 4.0
CEILING, OURS = "ceiling", "sentiment serve"
START_TIMEOUT_S = 180


class PeerSkipped(RuntimeError):
    """A peer could not be installed or started here; the message says why."""


def project_pins(*names: str) -> list[str]:
    """`name==version` of each package as installed beside this project."""
    return [f"{name}=={metadata.version(name)}" for name in names]


def peer_requirements() -> dict[str, list[str]]:
    """What each peer's virtualenv holds: the model's own stack at the project's versions."""
    model = project_pins("scikit-learn", "skops", "numpy", "scipy")
    http = project_pins("fastapi", "uvicorn")
    http[-1] = http[-1].replace("uvicorn", "uvicorn[standard]")
    mlflow = f"mlflow=={metadata.version('mlflow-skinny')}"  # the store's schema version
    return {
        "fastapi": [*http, *model],
        "mlflow": [mlflow, http[-1], *model],
        "bentoml": [f"bentoml=={BENTOML_VERSION}", *model],
    }


def ensure_venv(name: str, requirements: Sequence[str], console: Console) -> Path:
    """The `bin` folder of peer `name`'s virtualenv, made and installed unless it already
    holds exactly `requirements`."""
    venv = PEERS_DIR / name
    stamp = venv / ".installed"
    wanted = "\n".join(requirements)
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == wanted:
        return venv / "bin"
    python = str(venv / "bin" / "python")
    if UV.is_file():
        uv = str(UV)
        steps = [
            [uv, "venv", "--quiet", "--allow-existing", "--python", sys.executable, str(venv)],
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--compile-bytecode",
                "--python",
                python,
                *requirements,
            ],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [python, "-m", "pip", "install", "--quiet", *requirements],
        ]
    with console.status(f"installing the {name} peer into {venv}: {' '.join(requirements)}"):
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                tail = (done.stdout + done.stderr).strip()[-600:]
                raise PeerSkipped(f"`{' '.join(step[:3])} …` exited {done.returncode}: {tail}")
    stamp.write_text(wanted, encoding="utf-8")
    return venv / "bin"


@dataclass(frozen=True)
class Target:
    """A running server: where to send `batch` texts and how to read their labels from the
    answer."""

    url: str
    path: str
    body: Callable[[list[str]], Any] | None = None  # None: GET without a body (the ceiling)
    labels: Callable[[Any], list[str]] = list
    headers: dict[str, str] = field(default_factory=dict)
    batch: int = 1

    def requests(self, texts: Sequence[str], expected: Sequence[str]) -> list[Request]:
        """The texts in bodies of `batch` each (a last, smaller batch left out), with the
        labels sklearn gives them."""
        assert self.body is not None
        size = self.batch
        return [
            Request(self.body(list(texts[i : i + size])), list(expected[i : i + size]))
            for i in range(0, len(texts) - size + 1, size)
        ]


@dataclass(frozen=True)
class Request:
    body: Any
    expected: list[str]


@contextmanager
def peer_process(
    command: Sequence[str], env: dict[str, str], log_path: Path, ready_url: str
) -> Iterator[None]:
    """`command` in a session of its own (its workers too), ready when `ready_url` answers 200;
    PeerSkipped with its log's tail if it exits or is not ready in START_TIMEOUT_S."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while (failure := probe(ready_url, timeout=1)) is not None:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-1500:]
                state = f"exited {proc.returncode}" if proc.poll() is not None else failure
                raise PeerSkipped(f"`{' '.join(command[:3])} …` not ready ({state}):\n{tail}")
            time.sleep(0.3)
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@dataclass
class Run:
    """Everything the servers share: the store, the model and the texts."""

    tmp: Path
    env: dict[str, str]
    version: int
    model_file: Path
    token: str
    texts: list[str]
    expected: list[str]
    venvs: dict[str, Path | str] = field(default_factory=dict)  # bin folder, or why skipped
    mlflow_model: dict[str, str] | None = None  # what `mlflow models serve` serves (and why)

    def peer_env(self, bin_dir: Path, **extra: str) -> dict[str, str]:
        env = {**self.env, **extra, "PATH": f"{bin_dir}{os.pathsep}{self.env.get('PATH', '')}"}
        env.pop("VIRTUAL_ENV", None)
        return env

    def bin_dir(self, name: str) -> Path:
        found = self.venvs[name]
        if isinstance(found, str):
            raise PeerSkipped(found)
        return found


def text_body(texts: list[str]) -> dict[str, str]:
    return {"text": texts[0]}


def label_field(answer: Any) -> list[str]:
    return [str(answer["label"])]


def batch_body(texts: list[str]) -> dict[str, list[str]]:
    return {"texts": texts}


def batch_labels(answer: Any) -> list[str]:
    return [str(p["label"]) for p in answer["predictions"]]


@contextmanager
def ceiling(run: Run, workers: int) -> Iterator[Target]:
    with constant_server(run.env, run.tmp / f"ceiling-{workers}w.log", workers) as url:
        yield Target(url, "/constant")


@contextmanager
def fastapi_peer(run: Run, workers: int) -> Iterator[Target]:
    bin_dir = run.bin_dir("fastapi")
    port = free_port()
    command = [str(bin_dir / "python"), "-m", "uvicorn", "fastapi_app:app"]
    command += ["--app-dir", str(PEER_APPS), "--host", HOST, "--port", str(port)]
    command += ["--workers", str(workers)]
    env = run.peer_env(bin_dir, BENCH_PEER_MODEL=str(run.model_file))
    url = f"http://{HOST}:{port}"
    with peer_process(command, env, run.tmp / f"fastapi-{workers}w.log", f"{url}/health"):
        yield Target(url, "/predict", text_body, label_field)


def mlflow_model(run: Run, bin_dir: Path) -> dict[str, str]:
    """The tracking URI and model URI for `mlflow models serve`: the registered version in the
    project's store if MLflow's pyfunc predicts with it, else the same pipeline logged with
    `mlflow.sklearn.log_model` into a store of its own (benchmarks/peers/mlflow_model.py)."""
    if run.mlflow_model is None:
        settings = Settings(var_dir=Path(run.env["SENTIMENT_VAR_DIR"]))
        spare = run.tmp / "mlflow-peer"
        spare.mkdir()
        command = [str(bin_dir / "python"), str(PEER_APPS / "mlflow_model.py")]
        command += [settings.tracking_uri(), f"models:/{settings.model_name}/{run.version}"]
        command += [str(run.model_file), run.texts[0], f"sqlite:///{spare / 'mlflow.db'}"]
        env = run.peer_env(bin_dir)
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=spare, env=env, check=False
        )
        if done.returncode != 0:
            raise PeerSkipped(f"{command[1]} exited {done.returncode}: {done.stderr[-600:]}")
        run.mlflow_model = json.loads(done.stdout.strip().splitlines()[-1])
    return run.mlflow_model


@contextmanager
def mlflow_peer(run: Run, workers: int, batch: int = 1) -> Iterator[Target]:
    bin_dir = run.bin_dir("mlflow")
    served = mlflow_model(run, bin_dir)
    port = free_port()
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", served["model_uri"]]
    command += ["--env-manager", "local", "--host", HOST, "--port", str(port)]
    command += ["--workers", str(workers)]
    env = run.peer_env(bin_dir, MLFLOW_TRACKING_URI=served["tracking_uri"])
    url = f"http://{HOST}:{port}"
    with peer_process(command, env, run.tmp / f"mlflow-{workers}w.log", f"{url}/ping"):
        yield Target(
            url,
            "/invocations",
            lambda texts: {"inputs": texts},
            lambda answer: [str(p) for p in answer["predictions"]],
            batch=batch,
        )


@contextmanager
def bentoml_peer(run: Run, workers: int) -> Iterator[Target]:
    bin_dir = run.bin_dir("bentoml")
    port = free_port()
    command = [str(bin_dir / "bentoml"), "serve", "bentoml_service:Sentiment"]
    command += ["--working-dir", str(PEER_APPS), "--host", HOST, "--port", str(port)]
    env = run.peer_env(
        bin_dir,
        BENCH_PEER_MODEL=str(run.model_file),
        BENCH_PEER_WORKERS=str(workers),
        BENTOML_HOME=str(run.tmp / "bentoml"),
        BENTOML_DO_NOT_TRACK="true",
    )
    url = f"http://{HOST}:{port}"
    with peer_process(command, env, run.tmp / f"bentoml-{workers}w.log", f"{url}/readyz"):
        yield Target(url, "/predict", text_body, label_field)


@contextmanager
def ours(
    run: Run, workers: int, *, batch: int = 0, routing: str | None = None, auth: bool = True
) -> Iterator[Target]:
    """`sentiment serve` as users run it; `batch` texts per request to /predict/batch (0: one
    text to /predict), routed by `routing` (a routing config's YAML) if given, with auth
    turned off if told."""
    env = dict(run.env)
    if routing is not None:
        path = run.tmp / f"routing-{abs(hash(routing))}.yaml"
        path.write_text(routing, encoding="utf-8")
        env["SENTIMENT_ROUTING"] = str(path)
    if not auth:
        env["SENTIMENT_AUTH_DISABLED"] = "true"
    log_path = run.tmp / f"ours-{workers}w-{batch}-{auth}-{routing is not None}.log"
    with ServerProcess(env, log_path, workers) as server:
        try:
            server.wait_ready(START_TIMEOUT_S)
        except ServerFailed as exc:
            raise BenchmarkError(str(exc)) from exc
        headers = {"Authorization": f"Bearer {run.token}"} if auth else {}
        if batch:
            yield Target(server.url, "/predict/batch", batch_body, batch_labels, headers, batch)
        else:
            yield Target(server.url, "/predict", text_body, label_field, headers)


# What each feature on the request path costs: ours with it turned off or on (same model,
# same texts; the challenger alias names the champion's version, so labels still agree).
AB_SPLIT = "experiment: bench\nvariants: {champion: 50, challenger: 50}\nshadow: null\n"
SHADOW = "experiment: bench\nvariants: {champion: 100}\nshadow: challenger\n"
BATCHES = (32, 256)


SERVERS: dict[str, Callable[[Run, int], AbstractContextManager[Target]]] = {
    CEILING: ceiling,
    "FastAPI + predict_proba": fastapi_peer,
    "mlflow models serve": mlflow_peer,
    "BentoML": bentoml_peer,
    OURS: ours,
}
# Rows measured with one worker only: what one feature costs, and the batch forms.
ONE_WORKER: dict[str, Callable[[Run, int], AbstractContextManager[Target]]] = {
    f"{OURS}, auth off": functools.partial(ours, auth=False),
    f"{OURS}, A/B 50/50": functools.partial(ours, routing=AB_SPLIT),
    f"{OURS}, shadow on": functools.partial(ours, routing=SHADOW),
    **{f"{OURS}, batch {n}": functools.partial(ours, batch=n) for n in BATCHES},
    **{f"mlflow models serve, batch {n}": functools.partial(mlflow_peer, batch=n) for n in BATCHES},
}


@dataclass(frozen=True)
class Agreement:
    checked: int
    agreed: int
    non_2xx: int
    errors: int
    first_failure: str | None = None  # the first non-2xx answer or error, for the log

    @property
    def ok(self) -> bool:
        return self.agreed == self.checked and self.non_2xx == 0 and self.errors == 0


def check_labels(target: Target, texts: Sequence[str], expected: Sequence[str]) -> Agreement:
    """Each text once, in order, `target.batch` per request: how many labels equal `expected`
    (sklearn's, in-process)."""
    agreed = non_2xx = errors = checked = 0
    first_failure = None
    headers = {"Content-Type": "application/json", **target.headers}
    with httpx.Client(base_url=target.url, headers=headers, timeout=30) as client:
        for request in target.requests(texts, expected):
            checked += len(request.expected)
            try:
                response = client.post(target.path, json=request.body)
            except httpx.HTTPError as exc:
                errors += 1
                first_failure = first_failure or f"{type(exc).__name__}: {exc}"
                continue
            if not response.is_success:
                non_2xx += 1
                first_failure = first_failure or f"{response.status_code}: {response.text[-1500:]}"
                continue
            got = target.labels(response.json())
            agreed += sum(a == b for a, b in zip(got, request.expected, strict=False))
    return Agreement(checked, agreed, non_2xx, errors, first_failure)


def rotation_script(target: Target, texts: Sequence[str]) -> str:
    """A wrk script sending `texts` as `target`'s JSON bodies (`target.batch` texts each), one
    after another, in a loop."""
    bodies = ",\n".join(
        lua_string(json.dumps(r.body)) for r in target.requests(texts, [""] * len(texts))
    )
    headers = {"Content-Type": "application/json", **target.headers}
    header_items = ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items())
    return f"""local bodies = {{
{bodies}
}}
local headers = {{{header_items}}}
local requests = {{}}
local n = 0

function init(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", nil, headers, body)
  end
end

function request()
  n = n % #requests + 1
  return requests[n]
end
"""


@dataclass(frozen=True)
class Cell:
    server: str
    workers: int
    concurrency: int
    result: WrkResult | None
    agreement: Agreement | None
    skipped: str | None = None
    batch: int = 1  # texts per request

    @property
    def texts_per_s(self) -> float:
        return self.result.requests_per_s * self.batch if self.result else 0.0

    @property
    def failed(self) -> bool:
        if self.result is None:
            return False
        r = self.result
        broken = r.non_2xx > 0 or r.errors > 0 or r.requests == 0
        return broken or (self.agreement is not None and not self.agreement.ok)


def measure_server(
    name: str, run: Run, workers: int, args: argparse.Namespace, console: Console
) -> list[Cell]:
    """One server with `workers`: its labels checked, then wrk at each concurrency."""
    label = f"{name}, {workers} worker(s)"
    try:
        with console.status(f"starting {label}"):
            server = {**SERVERS, **ONE_WORKER}[name](run, workers)
            target = server.__enter__()
    except PeerSkipped as exc:
        reason = str(exc).splitlines()[0]
        console.print(f"[yellow]{label}: skipped[/]: {exc}", highlight=False)
        return [Cell(name, workers, c, None, None, reason) for c in args.concurrency]
    batch = target.batch
    try:
        agreement = None
        script = None
        if target.body is not None:
            with console.status(f"{label}: checking labels on {len(run.texts)} texts"):
                agreement = check_labels(target, run.texts, run.expected)
            console.print(
                f"{label}: {agreement.agreed}/{agreement.checked} labels agree with sklearn "
                f"(non-2xx {agreement.non_2xx}, errors {agreement.errors})"
                + (
                    f"; first failure: {agreement.first_failure}" if agreement.first_failure else ""
                ),
                highlight=False,
            )
            script = run.tmp / f"{name.split()[0].lower()}-{workers}w.lua"
            script.write_text(rotation_script(target, run.texts), encoding="utf-8")
        url = f"{target.url}{target.path}"
        if args.warmup > 0:
            with console.status(f"{label}: warming up for {args.warmup} s"):
                run_wrk(url, max(args.concurrency), args.warmup, script)
        cells = []
        for concurrency in args.concurrency:
            with console.status(f"{label}, c={concurrency}: {args.seconds} s"):
                result = run_wrk(url, concurrency, args.seconds, script)
            cells.append(Cell(name, workers, concurrency, result, agreement, batch=batch))
            console.print(
                f"{label}, c={concurrency}: {result.requests_per_s:,.0f} req/s "
                f"({result.requests_per_s * batch:,.0f} texts/s), "
                f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                f"non-2xx {result.non_2xx}, errors {result.errors}",
                highlight=False,
            )
        return cells
    finally:
        server.__exit__(None, None, None)


def ratios(cells: Sequence[Cell]) -> dict[tuple[str, int, int], dict[str, float]]:
    """Per cell, at the same workers and concurrency: its requests/s over the ceiling's (one
    text per request only); for a peer, ours over its; for ours with a feature turned off or
    on, the microseconds per request that costs (its time per request minus ours)."""
    rps = {
        (c.server, c.workers, c.concurrency): c.result.requests_per_s
        for c in cells
        if c.result is not None and c.result.requests_per_s > 0
    }
    batched = {c.server for c in cells if c.batch > 1}
    found: dict[tuple[str, int, int], dict[str, float]] = {}
    for (server, workers, concurrency), value in rps.items():
        row: dict[str, float] = {}
        top = rps.get((CEILING, workers, concurrency))
        if top and server != CEILING and server not in batched:
            row["over_ceiling"] = value / top
        our = rps.get((OURS, workers, concurrency))
        if our and server in SERVERS and server not in (CEILING, OURS):
            row["ours_over_this"] = our / value
        if our and server.startswith(f"{OURS}, ") and server not in batched:
            row["cost_us_vs_ours"] = 1e6 / value - 1e6 / our
        found[(server, workers, concurrency)] = row
    return found


def results_table(cells: Sequence[Cell], title: str) -> Table:
    table = Table(title=title)
    columns = ("server", "workers", "c", "req/s", "texts/s", "p50 ms", "p99 ms", "non-2xx")
    extra = ("errors", "labels agree", "÷ ceiling", "ours ÷ this", "µs/req vs ours")
    for column in (*columns, *extra):
        table.add_column(column, justify="left" if column == "server" else "right")
    found = ratios(cells)
    for cell in cells:
        head = (cell.server, str(cell.workers), str(cell.concurrency))
        if cell.result is None:
            table.add_row(*head, f"[yellow]skipped: {cell.skipped}[/]")
            continue
        r, row = cell.result, found.get((cell.server, cell.workers, cell.concurrency), {})
        a = cell.agreement
        agree = "" if a is None else f"{a.agreed}/{a.checked}"
        table.add_row(
            *head,
            f"{r.requests_per_s:,.0f}",
            f"{cell.texts_per_s:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            str(r.non_2xx),
            str(r.errors),
            f"[bold red]{agree}[/]" if a is not None and not a.ok else agree,
            f"{row['over_ceiling']:.2f}" if "over_ceiling" in row else "",
            f"{row['ours_over_this']:.2f}" if "ours_over_this" in row else "",
            f"{row['cost_us_vs_ours']:+.0f}" if "cost_us_vs_ours" in row else "",
        )
    return table


def train(var: Path, args: argparse.Namespace, console: Console) -> tuple[int, DataSpec]:
    spec = DataSpec(SST2_TRAIN, SST2_TEST) if args.data == "sst2" else DataSpec()
    if spec.path is not None and not spec.path.is_file():
        raise BenchmarkError(f"{spec.path} not found: set SENTIMENT_SHARED_DATA or --data builtin")
    config = TrainConfig(classifier=ClassifierConfig(C=C))
    return train_into(var, console, config, spec), spec


def prepare(tmp: Path, args: argparse.Namespace, console: Console) -> Run:
    """Train and register the model, write its skops file for the peers, and take the texts
    and sklearn's labels for them."""
    from sentiment_mlops import model_files
    from sentiment_mlops.registry import Registry

    var = tmp / "var"
    secret = secrets.token_urlsafe(36)
    env = server_env(
        var,
        jwt_secret=secret,
        routing=ROOT / "configs" / "routing.yaml",
        shutdown_grace_seconds=0.5,
    )
    with isolated_environment(env):
        version, spec = train(var, args, console)
        split = load_split(spec, TrainConfig(classifier=ClassifierConfig(C=C)))
        registry = Registry(Settings(var_dir=var))
        registry.promote(version, "challenger")  # the A/B and shadow rows' second variant
        pipeline = registry.load(version).pipeline
        servers = len(SERVERS) + len(ONE_WORKER)
        planned_s = 12 * servers * (len(args.concurrency) * args.seconds + args.warmup)
        token = predict_token(var, secret, planned_s + 1800)
    model_files.save(pipeline, tmp / "model")
    texts = list(split.test.texts)[: args.texts] if args.texts else list(split.test.texts)
    expected = [str(label) for label in pipeline.predict(texts)]
    console.print(
        f"model version {version} (TF-IDF + LogisticRegression, C={C:g}) trained on "
        f"{spec.describe()} and registered in a temporary store; {len(texts)} test texts",
        highlight=False,
    )
    return Run(tmp, env, version, tmp / "model" / model_files.MODEL_FILE, token, texts, expected)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="seconds per cell")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured seconds per server")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--data", choices=["sst2", "builtin"], default="sst2")
    parser.add_argument("--texts", type=int, default=0, help="use the first N test texts only")
    names = [*SERVERS, *ONE_WORKER]
    parser.add_argument("--servers", nargs="+", choices=names, default=names, metavar="NAME")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "peers.json")
    args = parser.parse_args()
    if args.seconds <= 0 or args.warmup < 0 or args.texts < 0:
        parser.error("--seconds must be positive, --warmup and --texts not negative")
    return args


def main() -> int:
    configure_process()  # one BLAS thread, no MLflow telemetry: inherited by every server
    args = parse_args()
    console = Console(width=None if sys.stdout.isatty() else 160)
    if shutil.which("wrk") is None:
        raise BenchmarkError("wrk is not installed: `apt-get install wrk` (or make bench-peers)")
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    console.print(
        "load average before: {:.2f} {:.2f} {:.2f} (wrk and the servers share the machine's "
        "cores: anything else running skews every number)".format(*load_before),
        highlight=False,
    )
    requirements = peer_requirements()
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as name:
        run = prepare(Path(name), args, console)
        for peer, wanted in requirements.items():
            try:
                run.venvs[peer] = ensure_venv(peer, wanted, console)
            except PeerSkipped as exc:
                console.print(f"[yellow]{peer}: skipped[/]: {exc}", highlight=False)
                run.venvs[peer] = str(exc).splitlines()[0]
        for server in args.servers:
            for workers in args.workers if server in SERVERS else [1]:
                cells += measure_server(server, run, workers, args, console)
    machine = (
        f"{os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"
    )
    title = f"wrk -t1 on 127.0.0.1, {args.seconds} s per cell, {started:%Y-%m-%d %H:%M} UTC"
    console.print(results_table(cells, f"{title}, {machine}"))
    found = ratios(cells)
    result = {
        "started": started.isoformat(timespec="seconds"),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tool": wrk_version(),
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "model": {"data": args.data, "C": C, "texts": len(run.texts)},
        "peers": requirements,
        "mlflow_served": run.mlflow_model,
        "cells": [
            {
                "server": c.server,
                "workers": c.workers,
                "concurrency": c.concurrency,
                "skipped": c.skipped,
                "texts_per_request": c.batch,
                "texts_per_s": c.texts_per_s,
                **(asdict(c.result) if c.result else {}),
                "errors": c.result.errors if c.result else None,
                "labels": asdict(c.agreement) if c.agreement else None,
                **found.get((c.server, c.workers, c.concurrency), {}),
                "failed": c.failed,
            }
            for c in cells
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    console.print(f"wrote {args.out}")
    if run.mlflow_model and run.mlflow_model["reason"]:
        console.print(
            f"mlflow models serve: the registered version does not predict through MLflow's "
            f"pyfunc ({run.mlflow_model['reason']}); served the same pipeline logged with "
            "mlflow.sklearn.log_model (no signature) in a store of its own",
            highlight=False,
        )
    failed = [c for c in cells if c.failed]
    if failed:
        console.print(
            f"[bold red]{len(failed)} cell(s) failed[/]: non-2xx responses, socket errors or "
            "labels that disagree with sklearn's"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
