"""Scoring speed: the compiled scorer against `Pipeline.predict_proba`, per batch size.

Fits the default pipeline on the built-in tweets (as `sentiment train` does) and on IMDB
reviews, scores the same held-out texts in batches of 1 to 1,000 through both, and prints a
table (batch size, µs per text for each, speed-up). Timings are medians over repeats,
sklearn and compiled interleaved. Writes benchmarks/results/scorer.json.

    python benchmarks/scorer.py [--only builtin] [--texts 1000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import sklearn
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_limits

from sentiment_mlops.config import TrainConfig
from sentiment_mlops.scorer import CompiledLinearScorer
from sentiment_mlops.train import DataSpec, fit, load_split

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SENTIMENT_SHARED_DATA", ROOT.parent / "shared" / "data"))
DATASETS = {
    "builtin": DataSpec(),
    "imdb": DataSpec(DATA / "imdb-aclimdb" / "train.csv", DATA / "imdb-aclimdb" / "test.csv"),
}
BATCH_SIZES = (1, 8, 32, 128, 1000)


def seconds_per_text(
    score: Callable[[Sequence[str]], np.ndarray], batches: list[list[str]]
) -> float:
    started = time.perf_counter()
    for batch in batches:
        score(batch)
    return (time.perf_counter() - started) / sum(len(batch) for batch in batches)


def measure(
    name: str, spec: DataSpec, n_texts: int, repeats: int, console: Console
) -> list[dict[str, object]]:
    """One row per batch size: both scorers on the same `n_texts` held-out texts."""
    config = TrainConfig()
    with console.status(f"{name}: loading and fitting"):
        trained = fit(load_split(spec, config), config, spec)
    pipeline = trained.pipeline
    started = time.perf_counter()
    scorer = CompiledLinearScorer.from_pipeline(pipeline)
    compile_ms = (time.perf_counter() - started) * 1e3
    texts = [str(text) for text in trained.split.test.texts[:n_texts]]
    max_abs_diff = float(np.abs(scorer.predict_proba(texts) - pipeline.predict_proba(texts)).max())
    mean_chars = statistics.fmean(len(text) for text in texts)
    rows = []
    for size in BATCH_SIZES:
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        timings: dict[str, list[float]] = {"sklearn": [], "compiled": []}
        with console.status(f"{name}: batches of {size}"):
            for _ in range(repeats):
                timings["sklearn"].append(seconds_per_text(pipeline.predict_proba, batches))
                timings["compiled"].append(seconds_per_text(scorer.predict_proba, batches))
        sklearn_us = statistics.median(timings["sklearn"]) * 1e6
        compiled_us = statistics.median(timings["compiled"]) * 1e6
        rows.append(
            {
                "dataset": name,
                "texts": len(texts),
                "mean_chars": round(mean_chars, 1),
                "vocabulary": len(pipeline[0].vocabulary_),
                "compile_ms": round(compile_ms, 2),
                "max_abs_diff": max_abs_diff,
                "batch_size": size,
                "sklearn_us_per_text": round(sklearn_us, 2),
                "compiled_us_per_text": round(compiled_us, 2),
                "speedup": round(sklearn_us / compiled_us, 2),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(DATASETS), action="append")
    parser.add_argument("--texts", type=int, default=1000, help="held-out texts scored")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scorer.json")
    args = parser.parse_args()
    console = Console()
    rows = []
    with threadpool_limits(limits=1):
        for name in args.only or DATASETS:
            rows.extend(measure(name, DATASETS[name], args.texts, args.repeats, console))
    table = Table(title="Scoring cost per text: Pipeline.predict_proba vs CompiledLinearScorer")
    for column in ("dataset", "batch size", "sklearn µs/text", "compiled µs/text", "speed-up"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for row in rows:
        table.add_row(
            str(row["dataset"]),
            str(row["batch_size"]),
            f"{row['sklearn_us_per_text']:.1f}",
            f"{row['compiled_us_per_text']:.1f}",
            f"{row['speedup']:.2f}x",
        )
    console.print(table)
    for name in dict.fromkeys(str(row["dataset"]) for row in rows):
        first = next(row for row in rows if row["dataset"] == name)
        console.print(
            f"{name}: {first['texts']} texts of {first['mean_chars']} characters on average, "
            f"{first['vocabulary']} terms, compiled in {first['compile_ms']} ms, "
            f"max |compiled - sklearn| = {first['max_abs_diff']:.1e}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "cpus": os.cpu_count(),
        "repeats": args.repeats,
        "results": rows,
    }
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
