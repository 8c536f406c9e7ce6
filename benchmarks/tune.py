"""The same hyperparameter search on a local Dask cluster of 1 and of 2 workers, on an IMDB
subset: wall time and speed-up; sharing the preprocessing and vectorizer stages vs recomputing
them per trial; and the best configuration against the default on the IMDB test set.

Prints tables and writes benchmarks/results/tune.json. Datasets are read from ../shared/data
(or SENTIMENT_SHARED_DATA); nothing is downloaded.

    python benchmarks/tune.py [--rows 6000] [--folds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sentiment_mlops.config import TrainConfig
from sentiment_mlops.data import LabelledTexts, Split, load_labelled
from sentiment_mlops.runtime import configure_process
from sentiment_mlops.train import DataSpec, fit
from sentiment_mlops.tuning.cluster import connect
from sentiment_mlops.tuning.compare import compare_paired
from sentiment_mlops.tuning.search import TrialResult, best_trial, run_search
from sentiment_mlops.tuning.space import TuneConfig, expand

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SENTIMENT_SHARED_DATA", ROOT.parent / "shared" / "data"))
IMDB = DATA / "imdb-aclimdb"
# 18 trials on 3 vectorizer settings: each vectorizer fitted on a fold serves 6 trials. The
# default configuration (configs/train.yaml) is one of them.
SPACE: dict[str, list[Any]] = {
    "vectorizer.ngram_range": [[1, 1], [1, 2], [1, 3]],
    "nb_scaling.enabled": [False, True],
    "classifier.C": [3.0, 10.0, 30.0],
}


def subset(data: LabelledTexts, rows: int, seed: int) -> LabelledTexts:
    """`rows` rows drawn at random, the classes in their proportions."""
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for index, label in enumerate(data.labels):
        by_class.setdefault(label, []).append(index)
    chosen: list[int] = []
    for indices in by_class.values():
        chosen.extend(rng.sample(indices, round(rows * len(indices) / len(data))))
    chosen.sort()
    return LabelledTexts(
        [data.texts[i] for i in chosen], [data.labels[i] for i in chosen], data.source
    )


def timed_search(
    data: LabelledTexts, config: TuneConfig, workers: int, share: bool, console: Console
) -> tuple[list[TrialResult], float, float]:
    """Results, the search's wall time and the cluster's start-up time (not in the former)."""
    started = time.perf_counter()
    with connect(workers=workers) as cluster:
        startup = time.perf_counter() - started
        with console.status(f"{workers} worker(s), sharing {'on' if share else 'off'}"):
            started = time.perf_counter()
            results = run_search(
                cluster.client, data, expand(config, TrainConfig()), config, share=share
            )
            wall = time.perf_counter() - started
    return results, wall, startup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6000, help="IMDB training rows searched on")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tune.json")
    args = parser.parse_args()
    configure_process()  # inherited by the workers: one BLAS thread each
    console = Console()
    config = TuneConfig(search="grid", budget=100, folds=args.folds, space=SPACE, metric="accuracy")
    with console.status("loading IMDB"):
        train = subset(load_labelled(IMDB / "train.csv"), args.rows, seed=0)
        test = load_labelled(IMDB / "test.csv")

    load_before = os.getloadavg()
    runs = []
    reference: list[TrialResult] | None = None
    for workers, share in [(1, True), (2, True), (2, False)]:
        results, wall, startup = timed_search(train, config, workers, share, console)
        scores = [r.scores for r in results]
        if reference is None:
            reference = results
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        assert scores == [r.scores for r in reference], "runs disagree on the scores"
        runs.append(
            {
                "workers": workers,
                "shared_stages": share,
                "wall_seconds": wall,
                "cluster_startup_seconds": startup,
                "trials": len(results),
                "classifier_seconds": sum(r.seconds for r in results),
            }
        )
        console.print(f"{workers} worker(s), sharing {share}: {wall:.1f} s")
    assert reference is not None
    one, two, unshared = runs
    speedup = one["wall_seconds"] / two["wall_seconds"]
    sharing_saves = unshared["wall_seconds"] / two["wall_seconds"]

    # "classifier s" sums the trials' own task times: if it grows with the workers, they
    # shared the CPU with each other (or with other processes) instead of running side by side.
    table = Table(title=f"{len(reference)} trials x {args.folds} folds, IMDB {len(train)} rows")
    for column in ("workers", "stages", "wall s", "speed-up", "classifier s", "cluster start s"):
        table.add_column(column, justify="right")
    for run in runs:
        table.add_row(
            str(run["workers"]),
            "shared" if run["shared_stages"] else "per trial",
            f"{run['wall_seconds']:.1f}",
            f"{one['wall_seconds'] / run['wall_seconds']:.2f}x",
            f"{run['classifier_seconds']:.1f}",
            f"{run['cluster_startup_seconds']:.1f}",
        )
    console.print(table)
    console.print(f"load average: {load_before} before, {os.getloadavg()} after")

    best = best_trial(reference)
    assert best.trial.config is not None
    default = TrainConfig()
    default_cv = next(
        (r.mean for r in reference if r.trial.config is not None and r.trial.config == default),
        None,
    )
    split = Split(train, test)
    spec = DataSpec(IMDB / "train.csv", IMDB / "test.csv")
    with console.status("refitting the best and the default, scoring IMDB test"):
        tuned = fit(split, best.trial.config, spec)
        baseline = fit(split, default, spec)
    comparison = compare_paired(
        test.labels,
        [str(p) for p in tuned.pipeline.predict(test.texts)],
        [str(p) for p in baseline.pipeline.predict(test.texts)],
    )
    quality = Table(title=f"IMDB test ({len(test)} reviews), both fitted on the {len(train)} rows")
    for column in ("config", "CV accuracy", "test accuracy"):
        quality.add_column(column, justify="left" if column == "config" else "right")
    quality.add_row(
        f"best (trial {best.number}): "
        + " ".join(f"{k}={v}" for k, v in best.trial.overrides.items()),
        f"{best.mean:.4f}",
        f"{tuned.report.accuracy:.4f}",
    )
    quality.add_row(
        "default (configs/train.yaml)",
        "-" if default_cv is None else f"{default_cv:.4f}",
        f"{baseline.report.accuracy:.4f}",
    )
    console.print(quality)
    console.print(
        f"speed-up 1 → 2 workers: {speedup:.2f}x; sharing stages saves "
        f"{sharing_saves:.2f}x over recomputing them per trial; best vs default: "
        f"{comparison.describe('the default')}",
        highlight=False,
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "imdb_train_rows": len(train),
        "imdb_test_rows": len(test),
        "tune_config": config.model_dump(),
        "runs": runs,
        "speedup_1_to_2_workers": speedup,
        "sharing_speedup": sharing_saves,
        "best": {
            "trial": best.number,
            "overrides": best.trial.overrides,
            "cv_accuracy": best.mean,
            "test_accuracy": tuned.report.accuracy,
        },
        "default": {"cv_accuracy": default_cv, "test_accuracy": baseline.report.accuracy},
        "best_vs_default": {
            "wins": comparison.wins,
            "losses": comparison.losses,
            "mcnemar_exact_p": comparison.p_value,
        },
        "trials": [
            {
                "trial": r.number,
                "overrides": r.trial.overrides,
                "cv_accuracy": r.mean,
                "cv_std": r.std,
            }
            for r in reference
        ],
    }
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
