"""Entity features on the airline tweets' time split: accuracy and macro-F1 with and without
them, and what an online lookup costs (p50/p99).

Trains the default pipeline on the earliest 80% of `with-context.csv` (one row per tweet id)
and tests on the rest, once on the text alone and once with the author's and account's
features from the Feast repository (point-in-time join); then materialises the store and
times single-row online lookups (SQLite; Redis with `--online redis`). Needs the `features`
extra (.venv-features). Writes benchmarks/results/entity_features.json.

    .venv-features/bin/python benchmarks/entity_features.py [--lookups 2000] [--online redis]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from sentiment_mlops.config import Settings, TrainConfig
from sentiment_mlops.features.events import ACCOUNT, USER, load_events
from sentiment_mlops.features.repository import materialize, online_features, open_repository
from sentiment_mlops.features.training import load_context_split
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
    out = ROOT / "benchmarks" / "results" / "entity_features.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    console.print(f"Wrote {out}")


def lookup_latency(settings: Settings, lookups: int, console: Console) -> dict[str, object]:
    """Single-row online lookups of real (user, account) pairs after materialising."""
    from datetime import UTC, datetime

    repository = open_repository(settings)
    materialize(repository, datetime.now(UTC))
    events = load_events(SOURCE)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(events), lookups)
    rows = [{USER: str(events[USER].iloc[i]), ACCOUNT: str(events[ACCOUNT].iloc[i])} for i in picks]
    for row in rows[:50]:  # warm-up: connections, registry cache
        online_features(repository, [row])
    timings = []
    for row in rows:
        started = time.perf_counter()
        online_features(repository, [row])
        timings.append(time.perf_counter() - started)
    if settings.features_online_store == "redis":
        repository.store.teardown()
    p50, p99 = (float(np.percentile(timings, q) * 1000) for q in (50, 99))
    console.print(
        f"Online lookup ({settings.features_online_store}, one user and one account per "
        f"call, {lookups} calls): p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    )
    return {"store": settings.features_online_store, "p50_ms": p50, "p99_ms": p99, "n": lookups}


if __name__ == "__main__":
    main()
