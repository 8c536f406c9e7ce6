"""Training: data in, evaluated model out, registered as a new version only if all went well.

Data is loaded and validated before anything touches the registry, and the model is fitted
and evaluated before a run is created, so bad input or a crash mid-fit leaves no trace there.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from sentiment_mlops import data as data_mod
from sentiment_mlops import datasets
from sentiment_mlops.config import TrainConfig
from sentiment_mlops.data import Split
from sentiment_mlops.evaluate import EvaluationReport, evaluate, save_report
from sentiment_mlops.model import build_pipeline, plain_vocabulary
from sentiment_mlops.registry import Registry, VersionInfo


@dataclass(frozen=True)
class DataSpec:
    """Where the training data comes from; no path means the built-in tweet corpus."""

    path: Path | None = None
    test_path: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    encoding: str = "utf-8"

    def describe(self) -> str:
        return str(self.path) if self.path else datasets.BUILTIN_NAME


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline with its evaluation and the facts needed to reproduce it."""

    pipeline: Pipeline
    report: EvaluationReport
    split: Split
    fit_seconds: float
    warnings: list[str] = field(default_factory=list)


def load_split(spec: DataSpec, config: TrainConfig) -> Split:
    """Load, validate and split the data exactly as training will see it."""
    if spec.path is None:
        if spec.test_path is not None:
            raise data_mod.DataError(
                "--test-data needs --data: the built-in corpus comes without a test file"
            )
        full = datasets.load_builtin()
        if config.builtin_classes:
            full = data_mod.keep_classes(full, config.builtin_classes)
        label_column = datasets.BUILTIN_LABEL_COLUMN
    else:
        full = data_mod.load_labelled(spec.path, spec.text_column, spec.label_column, spec.encoding)
        label_column = spec.label_column
    full = data_mod.with_conflict_report(full)
    if config.drop_duplicates:
        full = data_mod.drop_exact_duplicates(full)
    data_mod.check_trainable(full, label_column)
    if spec.test_path is None:
        return data_mod.split(full, config.test_size, config.seed)
    test = data_mod.load_labelled(
        spec.test_path, spec.text_column, spec.label_column, spec.encoding
    )
    data_mod.check_test_labels(full, test, spec.label_column)
    return Split(full, test)


def fit(split: Split, config: TrainConfig) -> TrainedModel:
    """Fit the configured pipeline and evaluate it on the held-out set.

    BLAS is held to one thread: on small machines its threads fight and training slows down.
    """
    pipeline = build_pipeline(config)
    with threadpool_limits(limits=1):
        started = time.perf_counter()
        plain_vocabulary(pipeline.fit(split.train.texts, split.train.labels))
        fit_seconds = time.perf_counter() - started
        proba = pipeline.predict_proba(split.test.texts)
    classes = [str(c) for c in pipeline.classes_]
    report = evaluate(split.test.labels, proba, classes)
    return TrainedModel(pipeline, report, split, fit_seconds, list(split.train.warnings))


def register(
    trained: TrainedModel,
    registry: Registry,
    config: TrainConfig,
    spec: DataSpec,
    alias: str | None = None,
) -> VersionInfo:
    """Log params, metrics, fingerprints, report and plots; register the model."""
    split = trained.split
    params = {
        **config.flat_params(),
        "data.source": spec.describe(),
        "data.test_source": str(spec.test_path) if spec.test_path else "split",
        "data.n_train": len(split.train),
        "data.n_test": len(split.test),
        "data.classes": split.train.classes,
    }
    metrics = {**trained.report.metrics(), "fit_seconds": trained.fit_seconds}
    tags = {
        "data_source": spec.describe(),
        "data_fingerprint": split.train.fingerprint(),
        "test_fingerprint": split.test.fingerprint(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        report_dir = Path(tmp) / "evaluation"
        save_report(trained.report, report_dir)
        (report_dir / "train_config.json").write_text(config.model_dump_json(indent=2))
        return registry.register(
            trained.pipeline,
            params=params,
            metrics=metrics,
            tags=tags,
            artifacts=report_dir,
            alias=alias,
        )


def train(
    spec: DataSpec,
    config: TrainConfig,
    registry: Registry,
    alias: str | None = None,
    console: Console | None = None,
) -> tuple[TrainedModel, VersionInfo]:
    """The whole training stage, with progress shown on `console`."""
    console = console or Console(stderr=True)
    with console.status(f"Loading {spec.describe()}"):
        split = load_split(spec, config)
    console.print(
        f"Data: {len(split.train)} training rows, {len(split.test)} test rows, "
        f"classes {', '.join(split.train.classes)}"
    )
    for warning in split.train.warnings:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    console.print("Fitting TF-IDF + logistic regression")
    with console.status("Fitting"):
        trained = fit(split, config)
    console.print(f"Fitted in {trained.fit_seconds:.1f} s")
    with console.status("Logging and registering the model"):
        version = register(trained, registry, config, spec, alias)
    return trained, version
