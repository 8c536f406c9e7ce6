"""Training: data in, a fitted and evaluated model out, as a plain `TrainResult`.

Data is loaded and validated before anything is fitted, and nothing here talks to MLflow:
`Registry.register_training` records a result, all or nothing. So fitting, tuning and the
model tests run without importing it, and bad input or a crash mid-fit leaves no trace there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from sentiment_mlops import data as data_mod
from sentiment_mlops import datasets
from sentiment_mlops.config import (
    DEFAULT_MAX_CLASSES,
    DEFAULT_MAX_TRAIN_TEXT_CHARS,
    TrainConfig,
)
from sentiment_mlops.data import LabelledTexts, Split
from sentiment_mlops.evaluate import EvaluationReport, evaluate, save_report
from sentiment_mlops.features.aggregates import FEATURE_SERVICE
from sentiment_mlops.model import (
    build_pipeline,
    calibrate_on,
    model_input,
    plain_vocabulary,
    serial,
)

CONFIG_FILE = "train_config.json"


@dataclass(frozen=True)
class DataSpec:
    """Where the training data comes from (no path means the built-in tweet corpus), and
    the most classes and the longest text it may hold (the CLI passes `Settings`' limits)."""

    path: Path | None = None
    test_path: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    encoding: str = "utf-8"
    validation_path: Path | None = None
    max_classes: int = DEFAULT_MAX_CLASSES
    max_text_chars: int = DEFAULT_MAX_TRAIN_TEXT_CHARS

    def describe(self) -> str:
        return str(self.path) if self.path else datasets.BUILTIN_NAME


@dataclass(frozen=True)
class TrainResult:
    """A fitted pipeline, its evaluation, and everything a registry records about it.

    `data_fingerprint` and `test_fingerprint` are the SHA-256 of the exact training and test
    rows (`LabelledTexts.fingerprint`); `warnings` are the data problems found on loading.
    """

    pipeline: Pipeline
    report: EvaluationReport
    split: Split
    config: TrainConfig
    data_source: str
    test_source: str
    data_fingerprint: str
    test_fingerprint: str
    fit_seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def params(self) -> dict[str, Any]:
        """The config as dotted `section.key` parameters, what the data was, and the entity
        features the model reads (names and the Feast feature service serving them)."""
        params = {
            **self.config.flat_params(),
            "data.source": self.data_source,
            "data.test_source": self.test_source,
            "data.n_train": len(self.split.train),
            "data.n_test": len(self.split.test),
            "data.classes": self.split.train.classes,
        }
        if self.split.validation is not None:
            params["data.validation_source"] = self.split.validation.source
            params["data.n_validation"] = len(self.split.validation)
        if self.split.train.entity_names:
            params["features.names"] = ",".join(self.split.train.entity_names)
            params["features.service"] = FEATURE_SERVICE
        return params

    @property
    def metrics(self) -> dict[str, float]:
        """The report's scalar metrics and the fitting time."""
        return {**self.report.metrics(), "fit_seconds": self.fit_seconds}

    @property
    def tags(self) -> dict[str, str]:
        """Where the data came from and the fingerprints of both sets."""
        tags = {
            "data_source": self.data_source,
            "data_fingerprint": self.data_fingerprint,
            "test_fingerprint": self.test_fingerprint,
        }
        if self.split.validation is not None:
            tags["validation_fingerprint"] = self.split.validation.fingerprint()
        if self.split.train.entity_names:
            tags["feature_service"] = FEATURE_SERVICE
            tags["features"] = ",".join(self.split.train.entity_names)
        return tags

    def write_artifacts(self, directory: Path) -> list[Path]:
        """Write report.json, the PNG plots and train_config.json; return their paths."""
        paths = save_report(self.report, directory)
        config_path = directory / CONFIG_FILE
        config_path.write_text(self.config.model_dump_json(indent=2), encoding="utf-8")
        return [*paths, config_path]


def load_split(spec: DataSpec, config: TrainConfig) -> Split:
    """Load, validate and split the data exactly as training will see it."""
    if spec.validation_path is not None and config.calibration.method == "none":
        raise data_mod.DataError(
            "--validation-data is where the probability calibrator is fitted, and "
            "calibration.method is none: set it to sigmoid or isotonic, or drop the option"
        )
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
        full = _load(spec.path, spec)
        label_column = spec.label_column
    full = data_mod.with_conflict_report(full)
    if config.drop_duplicates:
        full = data_mod.drop_exact_duplicates(full)
    data_mod.check_trainable(full, label_column, spec.max_classes)
    if spec.test_path is None:
        split = data_mod.split(full, config.test_size, config.seed)
    else:
        test = _load(spec.test_path, spec)
        data_mod.check_test_labels(full, test, spec.label_column)
        split = Split(full, test)
    if spec.validation_path is None:
        return split
    return replace(
        split, validation=load_validation(spec.validation_path, spec, config, split.train)
    )


def load_validation(
    path: Path, spec: DataSpec, config: TrainConfig, train: LabelledTexts
) -> LabelledTexts:
    """The validation file the calibrator is fitted on (it serves nothing else, so
    `load_split` refuses it with calibration off), with every class of the training data,
    since the calibrator maps each class's decisions."""
    validation = _load(path, spec)
    data_mod.check_test_labels(train, validation, spec.label_column)
    missing = sorted(set(train.labels) - set(validation.labels))
    if missing:
        raise data_mod.DataError(
            f"{validation.source}: no rows of class {', '.join(map(repr, missing))}: the "
            "calibrator needs every class the model predicts"
        )
    return validation


def _load(path: Path, spec: DataSpec) -> LabelledTexts:
    return data_mod.load_labelled(
        path, spec.text_column, spec.label_column, spec.encoding, spec.max_text_chars
    )


def fit(split: Split, config: TrainConfig, spec: DataSpec) -> TrainResult:
    """Fit the configured pipeline on `split` (loaded from `spec`) and evaluate it.

    BLAS is held to one thread here as well as by `runtime.configure_process`: OpenBLAS reads
    its variable only when numpy is first imported, so a caller that imported numpy before
    configuring the process (a notebook, a benchmark, a tuning worker) would otherwise fit
    with a thread per core, measured 3-6x slower on 2 cores.
    """
    train, test, validation = split.train, split.test, split.validation
    if validation is not None and train.entity_names:
        raise data_mod.DataError(
            "--validation-data cannot be combined with entity features: calibrate by CV"
        )
    pipeline = build_pipeline(config, train.entity_names, calibrate=validation is None)
    with threadpool_limits(limits=1):
        started = time.perf_counter()
        features = model_input(train.texts, train.entities, train.entity_names)
        serial(plain_vocabulary(pipeline.fit(features, train.labels)))
        if validation is not None:
            calibrate_on(pipeline, validation.texts, validation.labels, config)
        fit_seconds = time.perf_counter() - started
        proba = pipeline.predict_proba(model_input(test.texts, test.entities, test.entity_names))
    classes = [str(c) for c in pipeline.classes_]
    return TrainResult(
        pipeline=pipeline,
        report=evaluate(split.test.labels, proba, classes),
        split=split,
        config=config,
        data_source=spec.describe(),
        test_source=str(spec.test_path) if spec.test_path else "split",
        data_fingerprint=split.train.fingerprint(),
        test_fingerprint=split.test.fingerprint(),
        fit_seconds=fit_seconds,
        warnings=list(split.train.warnings),
    )
