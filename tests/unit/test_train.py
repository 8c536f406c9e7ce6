"""Training is reproducible (same data, config and seed give the same model) and returns a
plain result holding everything the registry records."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sentiment_mlops.cli import app
from sentiment_mlops.config import TrainConfig
from sentiment_mlops.data import DataError
from sentiment_mlops.train import DataSpec, TrainResult, fit, load_split


@pytest.fixture(scope="module")
def mr(shared_data: Path) -> DataSpec:
    return DataSpec(path=shared_data / "mr-rt-polarity" / "all.csv")


def test_same_data_config_and_seed_give_identical_results(mr: DataSpec) -> None:
    config = TrainConfig()
    first = fit(load_split(mr, config), config, mr)
    second = fit(load_split(mr, config), config, mr)
    assert first.split.train.fingerprint() == second.split.train.fingerprint()
    assert first.report.to_dict() == second.report.to_dict()
    texts = first.split.test.texts
    np.testing.assert_array_equal(
        first.pipeline.predict_proba(texts), second.pipeline.predict_proba(texts)
    )


def test_another_seed_gives_another_split(mr: DataSpec) -> None:
    a = load_split(mr, TrainConfig(seed=1))
    b = load_split(mr, TrainConfig(seed=2))
    assert a.train.fingerprint() != b.train.fingerprint()
    assert len(a.test) == len(b.test)
    assert 0.19 < len(a.test) / (len(a.train) + len(a.test)) < 0.21


@pytest.fixture(scope="module")
def mr_result(mr: DataSpec) -> TrainResult:
    config = TrainConfig()
    return fit(load_split(mr, config), config, mr)


def test_default_model_is_useful_on_movie_reviews(mr_result: TrainResult) -> None:
    assert mr_result.report.accuracy > 0.72
    assert mr_result.report.classes == ["negative", "positive"]


def test_result_holds_params_metrics_and_tags_for_the_registry(
    mr: DataSpec, mr_result: TrainResult
) -> None:
    params = mr_result.params
    assert params["classifier.C"] == TrainConfig().classifier.C
    assert params["data.source"] == str(mr.path)
    assert params["data.test_source"] == "split"
    assert params["data.n_train"] == len(mr_result.split.train)
    assert params["data.n_test"] == len(mr_result.split.test)
    assert params["data.classes"] == ["negative", "positive"]
    assert mr_result.metrics == {**mr_result.report.metrics(), "fit_seconds": mr_result.fit_seconds}
    assert mr_result.tags == {
        "data_source": str(mr.path),
        "data_fingerprint": mr_result.split.train.fingerprint(),
        "test_fingerprint": mr_result.split.test.fingerprint(),
    }


def test_result_writes_report_plots_and_config(mr_result: TrainResult, tmp_path: Path) -> None:
    paths = mr_result.write_artifacts(tmp_path / "evaluation")
    names = {path.name for path in paths}
    assert names == {
        "report.json",
        "confusion_matrix.png",
        "roc.png",
        "reliability.png",
        "train_config.json",
    }
    assert all(path.stat().st_size > 0 for path in paths)
    config = (tmp_path / "evaluation" / "train_config.json").read_text()
    assert TrainConfig.model_validate_json(config) == mr_result.config


def test_builtin_corpus_defaults_to_positive_vs_negative() -> None:
    split = load_split(DataSpec(), TrainConfig())
    assert split.train.classes == ["negative", "positive"]
    assert len(split.train) + len(split.test) > 20_000


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *rows])
    return path


# Rows 3 and 6 repeat rows 1 and 2 exactly; rows 4 and 5 share a text but not a label.
DUPLICATED = [
    ("good film", "pos"),
    ("bad film", "neg"),
    ("good film", "pos"),
    ("same words", "pos"),
    ("same words", "neg"),
    ("bad film", "neg"),
    ("fine film", "pos"),
    ("dull film", "neg"),
]


def test_training_data_loses_exact_duplicates_but_keeps_conflicting_labels(
    tmp_path: Path,
) -> None:
    train = write_rows(tmp_path / "train.csv", DUPLICATED)
    test = write_rows(tmp_path / "test.csv", [("nice film", "pos"), ("poor film", "neg")])
    split = load_split(DataSpec(train, test), TrainConfig())
    assert list(zip(split.train.texts, split.train.labels, strict=True)) == [
        ("good film", "pos"),
        ("bad film", "neg"),
        ("same words", "pos"),
        ("same words", "neg"),
        ("fine film", "pos"),
        ("dull film", "neg"),
    ]
    assert split.train.warnings == [
        f"{train}: 1 texts occur with conflicting labels, e.g. rows 4, 5: 'same words'",
        f"{train}: dropped 2 exact duplicate rows",
    ]


@pytest.mark.parametrize(("drop", "kept"), [(True, 6), (False, 24)])
def test_split_data_is_deduplicated_only_when_configured(
    tmp_path: Path, drop: bool, kept: int
) -> None:
    path = write_rows(tmp_path / "d.csv", DUPLICATED * 3)
    split = load_split(DataSpec(path), TrainConfig(drop_duplicates=drop, test_size=0.25))
    assert len(split.train) + len(split.test) == kept
    dropped = [w for w in split.train.warnings if "exact duplicate" in w]
    assert dropped == ([f"{path}: dropped 18 exact duplicate rows"] if drop else [])


def test_test_data_without_data_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--test-data needs --data"):
        load_split(DataSpec(test_path=tmp_path / "t.csv"), TrainConfig())


CALIBRATED = TrainConfig.model_validate({"calibration": {"method": "sigmoid", "cv": 2}})


def test_validation_data_needs_calibration_on(tmp_path: Path) -> None:
    train = write_rows(tmp_path / "train.csv", DUPLICATED)
    validation = write_rows(tmp_path / "val.csv", [("nice film", "pos"), ("poor film", "neg")])
    spec = DataSpec(train, validation, validation_path=validation)
    with pytest.raises(DataError, match=r"calibration\.method is none"):
        load_split(spec, TrainConfig())
    split = load_split(spec, CALIBRATED)
    assert split.validation is not None
    assert split.validation.texts == ["nice film", "poor film"]


def test_validation_data_must_hold_every_class_and_no_unknown_one(tmp_path: Path) -> None:
    train = write_rows(tmp_path / "train.csv", DUPLICATED)
    one_class = write_rows(tmp_path / "one.csv", [("nice film", "pos"), ("fine film", "pos")])
    with pytest.raises(DataError, match=r"no rows of class 'neg'"):
        load_split(DataSpec(train, one_class, validation_path=one_class), CALIBRATED)
    unknown = write_rows(tmp_path / "unknown.csv", [("ok film", "pos"), ("meh", "mixed")])
    with pytest.raises(DataError, match=r"row 2, column 'label': label 'mixed'"):
        load_split(DataSpec(train, one_class, validation_path=unknown), CALIBRATED)


def test_too_many_classes_are_refused_before_anything_is_fitted(tmp_path: Path) -> None:
    rows = [(f"film number {i}", label) for i in range(4) for label in "abcd"]
    path = write_rows(tmp_path / "d.csv", rows)
    with pytest.raises(DataError, match=r"d\.csv: column 'label': 4 classes, more than .* of 3"):
        load_split(DataSpec(path, max_classes=3), TrainConfig())
    assert load_split(DataSpec(path, max_classes=4), TrainConfig(test_size=0.25)).test


def test_long_texts_are_refused_in_every_file(tmp_path: Path) -> None:
    train = write_rows(tmp_path / "train.csv", DUPLICATED)
    long = write_rows(tmp_path / "long.csv", [("nice film", "pos"), ("a very long film", "neg")])
    with pytest.raises(DataError, match=r"long\.csv: row 2, column 'text': text of 16 char"):
        load_split(DataSpec(train, long, max_text_chars=15), TrainConfig())
    with pytest.raises(DataError, match=r"long\.csv: row 2, column 'text': text of 16 char"):
        load_split(DataSpec(long, train, max_text_chars=15), TrainConfig())
    spec = DataSpec(train, train, validation_path=long, max_text_chars=15)
    with pytest.raises(DataError, match=r"long\.csv: row 2, column 'text': text of 16 char"):
        load_split(spec, CALIBRATED)


def test_the_command_applies_the_settings_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    rows = [(f"film number {i}", label) for i in range(4) for label in "abc"]
    path = write_rows(tmp_path / "d.csv", [*rows, ("x" * 5001, "a")])
    monkeypatch.setenv("SENTIMENT_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SENTIMENT_MAX_TRAIN_TEXT_CHARS", "5000")
    result = CliRunner().invoke(app, ["train", "--data", str(path)])
    assert result.exit_code == 1, result.output
    assert "row 13, column 'text': text of 5,001 characters, longer than" in result.stderr
    monkeypatch.setenv("SENTIMENT_MAX_CLASSES", "2")
    path = write_rows(tmp_path / "d.csv", rows)
    result = CliRunner().invoke(app, ["train", "--data", str(path)])
    assert result.exit_code == 1
    assert "column 'label': 3 classes, more than the limit of 2" in result.stderr
    assert not (tmp_path / "var").exists()
