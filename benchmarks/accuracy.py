"""Accuracy of the default pipeline on public datasets, as `sentiment train` would fit it.

Prints a table (dataset, rows, accuracy, macro-F1, fit seconds) and writes
benchmarks/results/accuracy.json. Datasets are read from ../shared/data (or
SENTIMENT_SHARED_DATA); nothing is downloaded.

    python benchmarks/accuracy.py [--only imdb]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sentiment_mlops.config import TrainConfig
from sentiment_mlops.train import DataSpec, fit, load_split

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SENTIMENT_SHARED_DATA", ROOT.parent / "shared" / "data"))
DATASETS = {
    "imdb": DataSpec(DATA / "imdb-aclimdb" / "train.csv", DATA / "imdb-aclimdb" / "test.csv"),
    "sst2": DataSpec(DATA / "sst2-glue" / "train.csv", DATA / "sst2-glue" / "test.csv"),
    "airline": DataSpec(DATA / "twitter-us-airline-sentiment" / "all.csv"),
    "builtin": DataSpec(),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(DATASETS), action="append")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "accuracy.json"
    )
    args = parser.parse_args()
    console = Console()
    config = TrainConfig()
    rows = []
    for name in args.only or DATASETS:
        spec = DATASETS[name]
        with console.status(f"{name}: loading and fitting"):
            trained = fit(load_split(spec, config), config, spec)
        report = trained.report
        rows.append(
            {
                "dataset": name,
                "train_rows": len(trained.split.train),
                "test_rows": len(trained.split.test),
                "classes": report.classes,
                "accuracy": report.accuracy,
                "macro_f1": report.macro_f1,
                "roc_auc": report.roc_auc,
                "fit_seconds": trained.fit_seconds,
            }
        )
    table = Table(title="Default pipeline (TF-IDF 1-2 grams + logistic regression)")
    for column in ("dataset", "train rows", "test rows", "accuracy", "macro-F1", "fit s"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for row in rows:
        table.add_row(
            row["dataset"],
            str(row["train_rows"]),
            str(row["test_rows"]),
            f"{row['accuracy']:.4f}",
            f"{row['macro_f1']:.4f}",
            f"{row['fit_seconds']:.1f}",
        )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"config": config.model_dump(), "machine": platform.machine(), "results": rows}
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
