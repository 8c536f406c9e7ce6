"""Data loading and validation: every bad input names the file, row and column."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sentiment_mlops.data import (
    DataError,
    LabelledTexts,
    check_test_labels,
    check_trainable,
    conflicting_duplicates,
    drop_exact_duplicates,
    from_frame,
    keep_classes,
    load_labelled,
    split,
    with_conflict_report,
)


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    frame = pd.DataFrame(rows, columns=header.split(","))
    frame.to_csv(path, index=False)
    return path


GOOD = [("great film", "positive"), ("awful film", "negative"), ("loved it", "positive")]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".tsv"])
def test_loads_every_supported_format(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame(GOOD, columns=["text", "label"])
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    data = load_labelled(path)
    assert data.texts == [t for t, _ in GOOD]
    assert data.labels == [lab for _, lab in GOOD]


def test_custom_columns_and_integer_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"review": t, "stars": i}) for i, t in enumerate("ab")))
    data = load_labelled(path, text_column="review", label_column="stars")
    assert data.labels == ["0", "1"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope.csv: file not found"):
        load_labelled(tmp_path / "nope.csv")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.csv: file is empty"):
        load_labelled(path)


def test_header_only_file(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("text,label\n")
    with pytest.raises(DataError, match=r"h.csv: no data rows"):
        load_labelled(path)


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", GOOD, header="review,label")
    with pytest.raises(DataError, match=r"d.csv: no column 'text' \(columns: review, label\)"):
        load_labelled(path)


def test_empty_text_names_row_and_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [*GOOD, ("   ", "positive"), ("", "negative")])
    expected = r"d.csv: row 4, column 'text': empty .* \(and 1 more rows\)"
    with pytest.raises(DataError, match=expected):
        load_labelled(path)


def test_missing_label_names_row_and_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [*GOOD[:2], ("fine", "")])
    with pytest.raises(DataError, match=r"d.csv: row 3, column 'label': missing label"):
        load_labelled(path)


@pytest.mark.parametrize("cell", ["NaN", "nan", " NAN "])
def test_the_word_nan_as_a_text_is_a_missing_value(tmp_path: Path, cell: str) -> None:
    """Read as written, a CSV's NaN cell used to become the text 'NaN'; with all texts NaN,
    dropping duplicates then left one row per class, refused as 'classes with a single
    example'."""
    rows = [(cell, "positive")] * 3 + [(cell, "negative")] * 3
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    expected = rf"d.csv: row 1, column 'text': text is the word '{cell}', which is how a missing"
    with pytest.raises(DataError, match=expected + r".* \(and 5 more rows\)"):
        load_labelled(path)


def test_a_text_containing_nan_is_a_text(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [*GOOD, ("nan bread, lovely", "positive"), ("NA", "x")])
    assert load_labelled(path).texts[-2:] == ["nan bread, lovely", "NA"]


def test_the_word_nan_as_a_label_is_a_missing_value(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [*GOOD, ("fine", "NaN")])
    with pytest.raises(DataError, match=r"d.csv: row 4, column 'label': label is the word 'NaN'"):
        load_labelled(path)


@pytest.mark.parametrize("cell", ["null", "NaN"])
def test_null_or_nan_text_in_jsonl_is_missing_not_empty(tmp_path: Path, cell: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(f'{{"text": "ok", "label": "a"}}\n{{"text": {cell}, "label": "b"}}\n')
    with pytest.raises(DataError, match=r"row 2, column 'text': missing text \(null or NaN\)$"):
        load_labelled(path)


def test_null_text_in_parquet_is_missing_not_empty(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["ok", None], "label": ["a", "b"]}).to_parquet(path)
    with pytest.raises(DataError, match=r"row 2, column 'text': missing text \(null or NaN\)$"):
        load_labelled(path)


def test_pandas_na_text_in_a_frame_is_missing() -> None:
    frame = pd.DataFrame({"text": pd.array(["ok", None], dtype="string[python]"), "label": "a"})
    with pytest.raises(DataError, match=r"mem: row 2, column 'text': missing text"):
        from_frame(frame, "mem")


def test_non_string_text_in_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"text": 42, "label": "b"}\n')
    with pytest.raises(DataError, match=r"row 2, column 'text': text is not a string"):
        load_labelled(path)


def test_malformed_jsonl_names_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"text": \n')
    with pytest.raises(DataError, match=r"d.jsonl: line 2: not valid JSON"):
        load_labelled(path)


def test_undecodable_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\ngood,positive\ncaf\xe9 bad,negative\n")
    with pytest.raises(DataError, match=r"d.csv: line 3: byte 0xe9 is not valid utf-8"):
        load_labelled(path)
    assert load_labelled(path, encoding="latin-1").texts[1] == "café bad"


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "d.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match="unsupported file type"):
        load_labelled(path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_labelled(path)


def test_one_class_only_is_rejected() -> None:
    data = LabelledTexts(["a", "b"], ["pos", "pos"], "d.csv")
    with pytest.raises(DataError, match=r"d.csv: column 'label': only one class \('pos'\)"):
        check_trainable(data)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_text_over_the_limit_names_file_row_and_column(tmp_path: Path, suffix: str) -> None:
    rows = [*GOOD, ("x" * 11, "negative"), ("y" * 10, "positive"), ("z" * 12, "negative")]
    frame = pd.DataFrame(rows, columns=["review", "label"])
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    expected = (
        rf"d{suffix}: row 4, column 'review': text of 11 characters, longer than training's "
        r"limit of 10 \(SENTIMENT_MAX_TRAIN_TEXT_CHARS\); shorten or remove it "
        r"\(and 1 more rows\)"
    )
    with pytest.raises(DataError, match=expected):
        load_labelled(path, text_column="review", max_text_chars=10)
    assert len(load_labelled(path, text_column="review", max_text_chars=12)) == 6
    assert len(load_labelled(path, text_column="review")) == 6


def test_more_classes_than_the_limit_names_the_count_and_the_limit() -> None:
    data = LabelledTexts(["a", "b", "c", "d", "e", "f"], ["1", "1", "2", "2", "3", "3"], "d.csv")
    check_trainable(data, "stars", max_classes=3)
    check_trainable(data, "stars")
    expected = (
        r"d.csv: column 'stars': 3 classes, more than the limit of 2 \(SENTIMENT_MAX_CLASSES\)"
    )
    with pytest.raises(DataError, match=expected):
        check_trainable(data, "stars", max_classes=2)


def test_the_class_limit_is_named_before_classes_with_one_example() -> None:
    """5,000 distinct labels are mostly singletons: the count is what to fix first."""
    labels = [str(i) for i in range(200)]
    data = LabelledTexts([f"t{i}" for i in range(200)], labels, "ids.csv")
    with pytest.raises(DataError, match=r"200 classes, more than the limit of 100"):
        check_trainable(data, max_classes=100)


def test_unseen_test_label_names_row() -> None:
    train = LabelledTexts(["a", "b"], ["neg", "pos"], "train.csv")
    test = LabelledTexts(["c", "d"], ["pos", "neutral"], "test.csv")
    with pytest.raises(DataError, match=r"test.csv: row 2, column 'label': label 'neutral'"):
        check_test_labels(train, test)


def test_conflicting_duplicates_are_reported() -> None:
    data = LabelledTexts(["x", "y", "x", "x"], ["a", "b", "b", "a"], "d.csv")
    assert conflicting_duplicates(data) == {"x": [1, 3, 4]}
    reported = with_conflict_report(data)
    assert any("1 texts occur with conflicting labels" in w for w in reported.warnings)


def test_exact_duplicates_are_dropped_first_kept() -> None:
    data = LabelledTexts(["x", "y", "x"], ["a", "b", "a"], "d.csv")
    deduped = drop_exact_duplicates(data)
    assert deduped.texts == ["x", "y"]
    assert "dropped 1 exact duplicate rows" in deduped.warnings[0]


def test_identical_texts_with_different_labels_are_all_kept() -> None:
    """Only identical (text, label) rows are duplicates: conflicting labels are the user's call."""
    data = LabelledTexts(["x", "y", "x", "x", "y"], ["a", "b", "b", "a", "b"], "d.csv")
    deduped = drop_exact_duplicates(data)
    assert list(zip(deduped.texts, deduped.labels, strict=True)) == [
        ("x", "a"),
        ("y", "b"),
        ("x", "b"),
    ]
    assert deduped.warnings == ["d.csv: dropped 2 exact duplicate rows"]


def test_keep_classes() -> None:
    data = LabelledTexts(["a", "b", "c"], ["neg", "neu", "pos"], "d")
    assert keep_classes(data, ["neg", "pos"]).labels == ["neg", "pos"]
    with pytest.raises(DataError):
        keep_classes(data, ["nope"])


def test_split_is_stratified_and_deterministic() -> None:
    texts = [f"t{i}" for i in range(100)]
    labels = ["a"] * 80 + ["b"] * 20
    data = LabelledTexts(texts, labels, "d")
    first = split(data, 0.25, seed=7)
    again = split(data, 0.25, seed=7)
    other = split(data, 0.25, seed=8)
    assert first.test.texts == again.test.texts
    assert first.test.texts != other.test.texts
    assert first.test.labels.count("b") == 5
    assert set(first.train.texts).isdisjoint(first.test.texts)


def test_split_too_small_is_a_clear_error() -> None:
    data = LabelledTexts(["a", "b", "c"], ["x", "y", "x"], "tiny.csv")
    with pytest.raises(DataError, match=r"tiny\.csv: .* too few"):
        split(data, 0.2, seed=1)


def test_fingerprint_depends_on_exact_rows() -> None:
    a = LabelledTexts(["x", "y"], ["1", "2"], "a")
    assert a.fingerprint() == LabelledTexts(["x", "y"], ["1", "2"], "other").fingerprint()
    assert a.fingerprint() != LabelledTexts(["y", "x"], ["2", "1"], "a").fingerprint()
    assert a.fingerprint() != LabelledTexts(["x", "y"], ["1", "1"], "a").fingerprint()


def test_split_keeps_the_file_warnings_with_the_training_part() -> None:
    data = LabelledTexts([f"t{i}" for i in range(20)], ["a", "b"] * 10, "d", ["a warning"])
    parts = split(data, 0.5, seed=1)
    assert parts.train.warnings == ["a warning"]
    assert parts.test.warnings == []
