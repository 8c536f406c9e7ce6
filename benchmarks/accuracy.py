"""Accuracy of the default and the quality preset on public datasets, beside published figures.

Each model is fitted as `sentiment train` fits it (`train.fit`: the whole pipeline, BLAS on
one thread). Two tables:

- **Against published baselines**: IMDB (train -> test), SST-2 (GLUE train -> test) and MR
  (10-fold stratified CV, out-of-fold predictions pooled): accuracy, macro-F1, ECE, fit
  seconds and the serving cost of one text through the compiled scorer (median over single
  texts), for both presets, and the published linear baselines.
- **Generalisation**, on sets the quality preset was not chosen on: the airline tweets (three
  classes), SST-2 on its original sentence split, the built-in tweets, and across domains
  (trained on IMDB reviews, tested on SST-2 test sentences, and the reverse).

Where a dataset has a validation split (the two SST-2 sets), a calibrating preset fits its
calibrator there, as `sentiment train --validation-data` does; elsewhere by CV on training
folds. Prints both and writes benchmarks/results/accuracy.json. Datasets are read from
../shared/data (or SENTIMENT_SHARED_DATA); nothing is downloaded. Fit seconds are wall time:
the JSON keeps the load average around each fit, since a busy machine inflates them.

    python benchmarks/accuracy.py [--only imdb --only mr] [--preset quality]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.model_selection import StratifiedKFold

from sentiment_mlops import data as data_mod
from sentiment_mlops.config import TrainConfig, read_config
from sentiment_mlops.data import LabelledTexts, Split
from sentiment_mlops.evaluate import evaluate
from sentiment_mlops.scorer import make_scorer
from sentiment_mlops.train import DataSpec, TrainResult, fit, load_split

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SENTIMENT_SHARED_DATA", ROOT.parent / "shared" / "data"))
PRESETS = {"default": ROOT / "configs" / "train.yaml", "quality": ROOT / "configs" / "quality.yaml"}
# MR has no split: 10 stratified folds, shuffled with this seed (as in its PROVENANCE.md).
CV_FOLDS = 10
CV_SEED = 0


@dataclass(frozen=True)
class Benchmark:
    """One dataset row: where the data is, whether it is cross-validated, what was published."""

    spec: DataSpec
    title: str
    cross_validate: bool = False
    published: tuple[float, str] | None = None
    validation: Path | None = None

    def spec_for(self, config: TrainConfig) -> DataSpec:
        """The data as a preset trains on it: a calibrating preset fits its calibrator on the
        dataset's validation split where it has one, as `--validation-data` does."""
        if self.validation is None or config.calibration.method == "none":
            return self.spec
        return replace(self.spec, validation_path=self.validation)


IMDB_TRAIN = DATA / "imdb-aclimdb" / "train.csv"
IMDB_TEST = DATA / "imdb-aclimdb" / "test.csv"
SST2_TRAIN = DATA / "sst2-glue" / "train.csv"
SST2_TEST = DATA / "sst2-glue" / "test.csv"

BASELINES = {
    "imdb": Benchmark(
        DataSpec(IMDB_TRAIN, IMDB_TEST),
        "IMDB (aclImdb 25k/25k)",
        published=(0.9122, 'NBSVM-bi, Wang & Manning 2012, "Baselines and Bigrams"'),
    ),
    "sst2": Benchmark(
        DataSpec(SST2_TRAIN, SST2_TEST),
        "SST-2 (GLUE phrases -> test sentences)",
        published=(0.831, "bigram Naive Bayes (BiNB), Socher et al. 2013"),
        validation=DATA / "sst2-glue" / "validation.csv",
    ),
    "mr": Benchmark(
        DataSpec(DATA / "mr-rt-polarity" / "all.csv"),
        "MR (Pang & Lee 2005), 10-fold CV",
        cross_validate=True,
        published=(0.794, "NBSVM-bi, Wang & Manning 2012"),
    ),
}
GENERALISATION = {
    "airline": Benchmark(
        DataSpec(DATA / "twitter-us-airline-sentiment" / "all.csv"),
        "Airline tweets (3 classes, 80/20)",
    ),
    "sst2-sentence": Benchmark(
        DataSpec(DATA / "sst2-sentence" / "train.csv", DATA / "sst2-sentence" / "test.csv"),
        "SST-2 sentences (original split)",
        validation=DATA / "sst2-sentence" / "validation.csv",
    ),
    "builtin": Benchmark(DataSpec(), "Built-in tweets (pos/neg, 80/20)"),
    "imdb-to-sst2": Benchmark(DataSpec(IMDB_TRAIN, SST2_TEST), "IMDB train -> SST-2 test"),
    "sst2-to-imdb": Benchmark(DataSpec(SST2_TRAIN, IMDB_TEST), "SST-2 train -> IMDB test"),
}


def serving_us(result: TrainResult, texts: Sequence[str]) -> tuple[str, float]:
    """The scorer serving would use, and its median µs for one text scored alone."""
    scorer = make_scorer(result.pipeline)
    timings = []
    for text in texts:
        started = time.perf_counter()
        scorer.predict_proba([text])
        timings.append(time.perf_counter() - started)
    return scorer.kind, statistics.median(timings) * 1e6


def cross_validate(spec: DataSpec, config: TrainConfig) -> tuple[list[TrainResult], Any]:
    """Fit one model per fold; evaluate the pooled out-of-fold probabilities."""
    if spec.path is None:
        raise ValueError("cross-validation needs a data file")
    full = data_mod.load_labelled(spec.path, spec.text_column, spec.label_column, spec.encoding)
    if config.drop_duplicates:
        full = data_mod.drop_exact_duplicates(full)
    folds = StratifiedKFold(CV_FOLDS, shuffle=True, random_state=CV_SEED)
    results, labels, probas = [], [], []
    for train_idx, test_idx in folds.split(full.texts, full.labels):
        split = Split(_subset(full, train_idx, "train fold"), _subset(full, test_idx, "test fold"))
        result = fit(split, config, spec)
        results.append(result)
        labels.extend(split.test.labels)
        probas.append(result.pipeline.predict_proba(split.test.texts))
    classes = [str(c) for c in results[0].pipeline.classes_]
    return results, evaluate(labels, np.vstack(probas), classes)


def _subset(data: LabelledTexts, index: np.ndarray, name: str) -> LabelledTexts:
    return LabelledTexts(
        [data.texts[i] for i in index], [data.labels[i] for i in index], f"{data.source} ({name})"
    )


def measure(
    name: str, bench: Benchmark, preset: str, config: TrainConfig, n_serving: int
) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    spec = bench.spec_for(config)
    if bench.cross_validate:
        results, report = cross_validate(spec, config)
        fit_seconds = statistics.fmean(r.fit_seconds for r in results)
        last = results[-1]
        train_rows, test_rows = len(last.split.train), report.n_samples
    else:
        last = fit(load_split(spec, config), config, spec)
        report, fit_seconds = last.report, last.fit_seconds
        train_rows, test_rows = len(last.split.train), len(last.split.test)
    kind, us = serving_us(last, last.split.test.texts[:n_serving])
    return {
        "dataset": name,
        "title": bench.title,
        "preset": preset,
        "train_rows": train_rows,
        "test_rows": test_rows,
        "calibrated_on": "validation" if spec.validation_path else "training folds",
        "classes": report.classes,
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        "ece": report.ece,
        "fit_seconds": fit_seconds,
        "load_average": [load_before, os.getloadavg()[0]],
        "scorer": kind,
        "serving_us_per_text": us,
    }


def table(title: str, rows: list[dict[str, Any]], benches: dict[str, Benchmark]) -> Table:
    out = Table(title=title)
    columns = ("dataset", "preset", "accuracy", "macro-F1", "ECE", "fit s", "µs/text")
    for column in columns:
        out.add_column(column, justify="left" if column in {"dataset", "preset"} else "right")
    for name, bench in benches.items():
        for row in (r for r in rows if r["dataset"] == name):
            out.add_row(
                bench.title,
                row["preset"],
                f"{row['accuracy']:.4f}",
                f"{row['macro_f1']:.4f}",
                f"{row['ece']:.4f}",
                f"{row['fit_seconds']:.1f}",
                f"{row['serving_us_per_text']:.0f}"
                + ("" if row["scorer"] == "compiled" else f" ({row['scorer']})"),
            )
        if bench.published and any(r["dataset"] == name for r in rows):
            accuracy, source = bench.published
            out.add_row(bench.title, f"published: {source}", f"{accuracy:.4f}", *[""] * 4)
    return out


def main() -> None:
    every = {**BASELINES, **GENERALISATION}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(every), action="append", help="dataset rows")
    parser.add_argument("--preset", choices=sorted(PRESETS), action="append")
    parser.add_argument("--serving-texts", type=int, default=300, help="texts timed one by one")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "accuracy.json"
    )
    args = parser.parse_args()
    console = Console()
    configs = {name: read_config(PRESETS[name], TrainConfig) for name in args.preset or PRESETS}
    rows = []
    for name in args.only or every:
        for preset, config in configs.items():
            with console.status(f"{name}: fitting the {preset} preset"):
                rows.append(measure(name, every[name], preset, config, args.serving_texts))
    console.print(table("Against published linear baselines", rows, BASELINES))
    console.print(
        table("Generalisation (sets the quality preset was not chosen on)", rows, GENERALISATION)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "presets": {name: config.model_dump(mode="json") for name, config in configs.items()},
        "published": {name: b.published for name, b in BASELINES.items()},
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "results": rows,
    }
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
