"""Entity features on the airline tweets' time split: accuracy and macro-F1 with and without
them, what an online lookup costs (p50/p99), and what it adds to `/predict`.

Trains the default pipeline on the earliest 80% of `with-context.csv` (one row per tweet id)
and tests on the rest, once on the text alone and once with the author's and account's
features from the Feast repository (point-in-time join); then materialises the store and
times single-row online lookups (SQLite; Redis with `--online redis`): through
`online_features` (the feature service read from the registry per call, as a script would)
and through serving's `OnlineReader` (read once). Last, the app itself serves the model in
process (TestClient, no auth) and `/predict` is timed with the entity keys (a lookup) and
without (the no_key defaults, no lookup): the difference is what the lookup adds, threads
and timeout included. Needs the `features` extra (.venv-features). Writes
benchmarks/results/entity_features[_redis].json.

    .venv-features/bin/python benchmarks/entity_features.py [--lookups 2000] [--online redis]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import Settings, TrainConfig
from sentiment_mlops.data import read_table
from sentiment_mlops.features.aggregates import FEATURES
from sentiment_mlops.features.events import ACCOUNT, EVENT_ID, USER, load_events
from sentiment_mlops.features.repository import (
    OnlineReader,
    materialize,
    online_features,
    open_repository,
)
from sentiment_mlops.features.training import load_context_split
from sentiment_mlops.model import LoadedModel
from sentiment_mlops.subjects import subject_key
from sentiment_mlops.train import DataSpec, fit

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SENTIMENT_SHARED_DATA", ROOT.parent / "shared" / "data"))
SOURCE = DATA / "twitter-us-airline-sentiment" / "with-context.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--online", choices=["sqlite", "redis"], default="sqlite")
    args = parser.parse_args()
    console = Console()
    results: dict[str, object] = {"python": platform.python_version(), "data": SOURCE.name}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            var_dir=Path(tmp),
            features_online_store=args.online,
            features_project=f"bench_{os.getpid()}",
        )
        table = Table(title="Time split (train on the earliest 80%, test on the rest)")
        for column in ("model", "accuracy", "macro-F1", "train rows", "test rows", "fit s"):
            table.add_column(column)
        for enabled in (False, True):
            config = TrainConfig.model_validate({"features": {"enabled": enabled, "split": "time"}})
            started = time.perf_counter()
            split = load_context_split(SOURCE, config, settings)
            join_seconds = time.perf_counter() - started
            result = fit(split, config, DataSpec(SOURCE))
            pipeline = result.pipeline
            metrics = result.report.metrics()
            name = "text + entity features" if enabled else "text only"
            results[name] = {
                "accuracy": metrics["accuracy"],
                "macro_f1": metrics["macro_f1"],
                "n_train": len(split.train),
                "n_test": len(split.test),
                "fit_seconds": result.fit_seconds,
                "load_and_join_seconds": join_seconds,
            }
            table.add_row(
                name,
                f"{metrics['accuracy']:.4f}",
                f"{metrics['macro_f1']:.4f}",
                str(len(split.train)),
                str(len(split.test)),
                f"{result.fit_seconds:.1f}",
            )
        console.print(table)
        results["online"] = lookup_latency(settings, args.lookups, console)
        results["predict"] = predict_latency(settings, pipeline, args.lookups, console)
        if settings.features_online_store == "redis":
            open_repository(settings).store.teardown()
    suffix = "_redis" if args.online == "redis" else ""
    out = ROOT / "benchmarks" / "results" / f"entity_features{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    console.print(f"Wrote {out}")


_AUTHORS: dict[str, str] = {}


def author(events: pd.DataFrame, i: int) -> str:
    """Event i's author as the file names them (events keep only their `subject_hash`): what a
    client sends as `user_id`."""
    if not _AUTHORS:
        frame = read_table(SOURCE)
        ids, users = frame["tweet_id"].astype(str), frame["user"].astype(str)
        _AUTHORS.update(zip(ids, users, strict=True))
    return _AUTHORS[str(events[EVENT_ID].iloc[i])].strip()


def lookup_latency(settings: Settings, lookups: int, console: Console) -> dict[str, object]:
    """Single-row online lookups of real (user, account) pairs after materialising."""
    from datetime import UTC, datetime

    repository = open_repository(settings)
    materialize(repository, datetime.now(UTC))
    events = load_events(SOURCE, subject_key(settings))
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(events), lookups)
    # As a client names them (OnlineReader keys the author by subject_hash, as serving does)…
    rows = [{USER: author(events, i), ACCOUNT: str(events[ACCOUNT].iloc[i])} for i in picks]
    # … and as the store holds them (online_features takes the keys as stored).
    stored = [
        {USER: str(events[USER].iloc[i]), ACCOUNT: str(events[ACCOUNT].iloc[i])} for i in picks
    ]
    for row in stored[:50]:  # warm-up: connections, registry cache
        online_features(repository, [row])
    reader = OnlineReader(settings, FEATURES, socket_timeout=1.0)
    out: dict[str, object] = {"store": settings.features_online_store, "n": lookups}
    for name, lookup, keys in (
        ("online_features", lambda row: online_features(repository, [row]), stored),
        ("OnlineReader", lambda row: reader.read(row[USER], row[ACCOUNT]), rows),
    ):
        timings = []
        for row in keys:
            started = time.perf_counter()
            lookup(row)
            timings.append(time.perf_counter() - started)
        p50, p99 = percentiles(timings)
        out[name] = {"p50_ms": p50, "p99_ms": p99}
        console.print(
            f"Online lookup via {name} ({settings.features_online_store}, one user and one "
            f"account per call, {lookups} calls): p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        )
    return out


def percentiles(seconds: list[float]) -> tuple[float, float]:
    p50, p99 = (float(np.percentile(seconds, q) * 1000) for q in (50, 99))
    return p50, p99


class _Source:
    """One model as version 1 of the alias `champion`: what the app's pool asks a registry."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def resolve(self, alias: str) -> int | None:
        return 1

    def load(self, ref: str | int) -> LoadedModel:
        return LoadedModel(self.pipeline, 1, "0" * 64, "benchmark")


def predict_latency(
    settings: Settings, pipeline: Pipeline, requests: int, console: Console
) -> dict[str, object]:
    """`/predict` of the features model in process, with entity keys (a lookup) and without
    (defaults, no lookup), interleaved so a busy machine weighs on both alike. Latency is the
    server's own (the access log's `latency_ms`, request received to response sent), so the
    test client's overhead does not drown the difference."""
    from fastapi.testclient import TestClient

    from sentiment_mlops.serving.app import create_app

    events = load_events(SOURCE, subject_key(settings))
    rng = np.random.default_rng(1)
    picks = rng.integers(0, len(events), requests)
    keyed = "with keys (lookup)"
    unkeyed = "without keys (no lookup)"
    bodies = [
        (name, {"text": str(events["text"].iloc[i]), **keys})
        for i in picks
        for name, keys in (
            (
                keyed,
                {"user_id": author(events, i), "account": str(events[ACCOUNT].iloc[i])},
            ),
            (unkeyed, {}),
        )
    ]
    routing = settings.var_dir / "routing.yaml"
    routing.write_text("experiment: default\nvariants: {champion: 100}\n", encoding="utf-8")
    app_settings = settings.model_copy(
        update={"auth_disabled": True, "routing": routing, "reload_interval_seconds": 3600}
    )
    timings: dict[str, list[float]] = {keyed: [], unkeyed: []}
    reasons: dict[str, int] = {}
    access = _Latencies()
    with TestClient(create_app(app_settings, _Source(pipeline))) as client:
        while client.get("/ready").status_code != 200:
            time.sleep(0.05)
        for _, body in bodies[:100]:  # warm-up: store opened, connections made
            client.post("/predict", json=body)
        logger = logging.getLogger("sentiment_mlops.serving.access")
        logger.handlers[:] = [access]  # also keeps the log lines off the terminal
        logger.propagate = False
        for name, body in bodies:
            answer = client.post("/predict", json=body).json()
            timings[name].append(access.last / 1000)
            for reason in answer["features"]["defaults"].values():
                reasons[f"{name}: {reason}"] = reasons.get(f"{name}: {reason}", 0) + 1
    out: dict[str, object] = {"store": settings.features_online_store, "n": requests}
    table = Table(
        title=f"/predict in the server ({settings.features_online_store}, {requests} each)"
    )
    for column in ("request", "p50 ms", "p99 ms"):
        table.add_column(column)
    measured = {name: percentiles(values) for name, values in timings.items()}
    for name, (p50, p99) in measured.items():
        out[name] = {"p50_ms": p50, "p99_ms": p99}
        table.add_row(name, f"{p50:.3f}", f"{p99:.3f}")
    added = [a - b for a, b in zip(measured[keyed], measured[unkeyed], strict=True)]
    out["added_by_lookup"] = {"p50_ms": added[0], "p99_ms": added[1]}
    out["defaults"] = reasons
    table.add_row("added by the lookup", f"{added[0]:.3f}", f"{added[1]:.3f}")
    console.print(table)
    console.print(f"Defaults used (entity, by request kind and reason): {reasons}")
    return out


class _Latencies(logging.Handler):
    """Keeps the last access log line's `latency_ms`."""

    last = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        self.last = float(getattr(record, "latency_ms", 0.0))


if __name__ == "__main__":
    main()
