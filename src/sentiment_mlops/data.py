"""Load labelled texts from CSV, JSONL or Parquet, validate them, split and fingerprint them.

Every problem in user data is a `DataError` whose one-line message names the file, the row
(1-based, the header not counted) and the column, so the user can fix the file and retry.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


class DataError(ValueError):
    """User data cannot be used; the message says where and what to do."""


@dataclass(frozen=True)
class LabelledTexts:
    """Texts with one label each, and where they came from (for messages and provenance)."""

    texts: list[str]
    labels: list[str]
    source: str
    warnings: list[str] = field(default_factory=list)
    # Entity features (features/training.py): one row of `entity_names` values per text.
    entities: np.ndarray | None = None
    entity_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def fingerprint(self) -> str:
        """SHA-256 of the exact rows in order: equal fingerprints mean equal training data."""
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels, strict=True):
            digest.update(text.encode("utf-8"))
            digest.update(b"\x1f")
            digest.update(label.encode("utf-8"))
            digest.update(b"\x1e")
        if self.entities is not None:
            digest.update("\x1f".join(self.entity_names).encode("utf-8"))
            digest.update(np.ascontiguousarray(self.entities, dtype="<f8").tobytes())
        return digest.hexdigest()

    def subset(self, rows: Sequence[int], source: str, warnings: list[str]) -> LabelledTexts:
        """These rows, in the order given, with their entity features."""
        return LabelledTexts(
            [self.texts[i] for i in rows],
            [self.labels[i] for i in rows],
            source,
            warnings,
            None if self.entities is None else self.entities[list(rows)],
            self.entity_names,
        )


@dataclass(frozen=True)
class Split:
    """A training set, the held-out set it is judged on and, if given, a validation set the
    probability calibrator is fitted on (`--validation-data`)."""

    train: LabelledTexts
    test: LabelledTexts
    validation: LabelledTexts | None = None


def row_error(source: str, rows: Sequence[int], column: str, problem: str) -> DataError:
    more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
    return DataError(f"{source}: row {rows[0]}, column '{column}': {problem}{more}")


def _decode(path: Path, raw: bytes, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}: line {line}: byte 0x{raw[exc.start]:02x} is not valid {encoding}; "
            "re-save the file as UTF-8 or pass its encoding (--encoding latin-1)"
        ) from exc
    except LookupError as exc:
        raise DataError(f"{path}: unknown encoding '{encoding}'") from exc


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number}: not valid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object per line")
        records.append(record)
    return pd.DataFrame.from_records(records)


def read_table(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV/TSV/JSONL/Parquet file into a DataFrame without guessing types."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type; use one of {', '.join(sorted(SUFFIXES))}")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: file is empty")
    if kind == "parquet":
        try:
            return pd.read_parquet(io.BytesIO(raw))
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise DataError(f"{path}: not a readable Parquet file: {exc}") from exc
    text = _decode(path, raw, encoding)
    if kind == "jsonl":
        return _read_jsonl(path, text)
    try:
        return pd.read_csv(
            io.StringIO(text),
            sep="\t" if kind == "tsv" else ",",
            dtype=str,
            keep_default_na=False,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from exc


def _column(frame: pd.DataFrame, source: str, name: str) -> list[object]:
    if name not in frame.columns:
        found = ", ".join(map(str, frame.columns)) or "none"
        raise DataError(
            f"{source}: no column '{name}' (columns: {found}); "
            "name the right ones with --text-column and --label-column"
        )
    return frame[name].tolist()


def _is_missing(value: object) -> bool:
    """A cell with no value: JSON null or NaN, a Parquet null, pandas' NA."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def is_nan_word(value: object) -> bool:
    """The word NaN (any case) as a whole cell: what `str(float("nan"))`, numpy and pandas'
    `to_csv(na_rep="NaN")` write for a missing value. CSV cells are read as written
    (`keep_default_na=False`: an empty cell is an empty text, "NA" or "None" a text), and NaN
    is the one such marker refused: as a whole text or label it stands for a missing value,
    not a sentence or a class."""
    return isinstance(value, str) and len(value) < 16 and value.strip().lower() == "nan"


def _rows(values: Sequence[object], wrong: Callable[[object], bool]) -> list[int]:
    return [row for row, value in enumerate(values, start=1) if wrong(value)]


def check_text_lengths(
    values: Sequence[object], source: str, column: str, max_chars: int | None
) -> None:
    """DataError naming the rows whose text is longer than `max_chars` (None: no limit)."""
    if max_chars is None:
        return
    too_long = _rows(values, lambda v: isinstance(v, str) and len(v) > max_chars)
    if too_long:
        length = len(str(values[too_long[0] - 1]))
        raise row_error(
            source,
            too_long,
            column,
            f"text of {length:,} characters, longer than training's limit of {max_chars:,} "
            "(SENTIMENT_MAX_TRAIN_TEXT_CHARS); shorten or remove it",
        )


def _texts(
    values: list[object], source: str, column: str, max_chars: int | None = None
) -> list[str]:
    wrong_type = _rows(values, lambda v: not _is_missing(v) and not isinstance(v, str))
    if wrong_type:
        raise row_error(source, wrong_type, column, "text is not a string")
    missing = _rows(values, _is_missing)
    if missing:
        raise row_error(source, missing, column, "missing text (null or NaN)")
    _refuse_nan_words(values, source, column, "text")
    blank = _rows(values, lambda v: not str(v).strip())
    if blank:
        raise row_error(source, blank, column, "empty or whitespace-only text")
    check_text_lengths(values, source, column, max_chars)
    return [str(v) for v in values]


def _labels(values: list[object], source: str, column: str) -> list[str]:
    missing = _rows(values, lambda v: _is_missing(v) or not str(v).strip())
    if missing:
        raise row_error(source, missing, column, "missing label")
    _refuse_nan_words(values, source, column, "label")
    return [str(v).strip() for v in values]


def _refuse_nan_words(values: list[object], source: str, column: str, what: str) -> None:
    """DataError naming the first row whose `what` (text, label) is the word NaN."""
    nan_word = _rows(values, is_nan_word)
    if nan_word:
        raise row_error(
            source,
            nan_word,
            column,
            f"{what} is the word {values[nan_word[0] - 1]!r}, which is how a missing value is "
            f"written; fill in the {what} or remove the row",
        )


def load_labelled(
    path: Path,
    text_column: str = "text",
    label_column: str = "label",
    encoding: str = "utf-8",
    max_text_chars: int | None = None,
) -> LabelledTexts:
    """Load and validate a user file: every row must have a non-empty text, at most
    `max_text_chars` long (None: no limit), and a label."""
    frame = read_table(path, encoding)
    return from_frame(frame, str(path), text_column, label_column, max_text_chars)


def from_frame(
    frame: pd.DataFrame,
    source: str,
    text_column: str = "text",
    label_column: str = "label",
    max_text_chars: int | None = None,
) -> LabelledTexts:
    """Validate an in-memory table; `source` names it in error messages."""
    if frame.empty:
        raise DataError(f"{source}: no data rows")
    texts = _texts(_column(frame, source, text_column), source, text_column, max_text_chars)
    labels = _labels(_column(frame, source, label_column), source, label_column)
    return LabelledTexts(texts, labels, source)


def conflicting_duplicates(data: LabelledTexts) -> dict[str, list[int]]:
    """Texts that occur more than once with different labels, with their 1-based rows."""
    rows: dict[str, list[int]] = defaultdict(list)
    labels: dict[str, set[str]] = defaultdict(set)
    for row, (text, label) in enumerate(zip(data.texts, data.labels, strict=True), start=1):
        rows[text].append(row)
        labels[text].add(label)
    return {text: rows[text] for text, seen in labels.items() if len(seen) > 1}


def drop_exact_duplicates(data: LabelledTexts) -> LabelledTexts:
    """Keep the first of identical (text, label) rows: copies must not straddle the split."""
    seen: set[tuple[str, str]] = set()
    texts: list[str] = []
    labels: list[str] = []
    for pair in zip(data.texts, data.labels, strict=True):
        if pair not in seen:
            seen.add(pair)
            texts.append(pair[0])
            labels.append(pair[1])
    dropped = len(data) - len(texts)
    notes = [*data.warnings]
    if dropped:
        notes.append(f"{data.source}: dropped {dropped} exact duplicate rows")
    return LabelledTexts(texts, labels, data.source, notes)


def with_conflict_report(data: LabelledTexts) -> LabelledTexts:
    """Attach a warning when identical texts carry different labels (kept: the user decides)."""
    conflicts = conflicting_duplicates(data)
    if not conflicts:
        return data
    text, rows = next(iter(conflicts.items()))
    preview = text if len(text) <= 40 else text[:37] + "..."
    note = (
        f"{data.source}: {len(conflicts)} texts occur with conflicting labels, "
        f"e.g. rows {', '.join(map(str, rows[:5]))}: {preview!r}"
    )
    return LabelledTexts(data.texts, data.labels, data.source, [*data.warnings, note])


def check_trainable(
    data: LabelledTexts, label_column: str = "label", max_classes: int | None = None
) -> None:
    """A classifier needs at least two classes, each with at least two examples, and (unless
    `max_classes` is None) at most `max_classes` classes."""
    counts = Counter(data.labels)
    if len(counts) < 2:
        only = next(iter(counts))
        raise DataError(
            f"{data.source}: column '{label_column}': only one class ({only!r}); need at least two"
        )
    if max_classes is not None and len(counts) > max_classes:
        raise DataError(
            f"{data.source}: column '{label_column}': {len(counts):,} classes, more than the "
            f"limit of {max_classes} (SENTIMENT_MAX_CLASSES); is it the label column "
            "(--label-column)? Merge or drop classes, or raise the limit"
        )
    rare = sorted(label for label, n in counts.items() if n < 2)
    if rare:
        raise DataError(
            f"{data.source}: column '{label_column}': classes with a single example: "
            f"{', '.join(rare)}; add examples or remove them"
        )


def check_test_labels(
    train: LabelledTexts, test: LabelledTexts, label_column: str = "label"
) -> None:
    """Every label in the test file must be one the model can predict."""
    known = set(train.labels)
    unseen = [row for row, label in enumerate(test.labels, start=1) if label not in known]
    if unseen:
        label = test.labels[unseen[0] - 1]
        raise row_error(
            test.source,
            unseen,
            label_column,
            f"label {label!r} does not occur in the training data "
            f"(labels: {', '.join(sorted(known))})",
        )


def keep_classes(data: LabelledTexts, classes: Iterable[str]) -> LabelledTexts:
    """Restrict to some classes, e.g. positive vs negative out of a three-class corpus."""
    wanted = set(classes)
    pairs = [(t, lab) for t, lab in zip(data.texts, data.labels, strict=True) if lab in wanted]
    if not pairs:
        raise DataError(f"{data.source}: none of the classes {sorted(wanted)} occur in the data")
    texts, labels = (list(x) for x in zip(*pairs, strict=True))
    return LabelledTexts(texts, labels, data.source, data.warnings)


def split(data: LabelledTexts, test_size: float, seed: int) -> Split:
    """Stratified, seeded split: the same data and seed always give the same two sets."""
    counts = Counter(data.labels)
    n_test = round(len(data) * test_size)
    if n_test < len(counts) or len(data) - n_test < len(counts):
        raise DataError(
            f"{data.source}: {len(data)} rows are too few for a stratified split with "
            f"test_size={test_size} over {len(counts)} classes; add data or pass --test-data"
        )
    try:
        train_idx, test_idx = train_test_split(
            list(range(len(data))), test_size=test_size, random_state=seed, stratify=data.labels
        )
    except ValueError as exc:
        raise DataError(
            f"{data.source}: cannot split: {exc}; add data or pass --test-data"
        ) from exc

    def take(idx: list[int], name: str, warnings: list[str]) -> LabelledTexts:
        return data.subset(idx, f"{data.source} ({name})", warnings)

    # Warnings about the whole file travel with the training part, as with a --test-data file.
    return Split(
        take(sorted(train_idx), "train split", data.warnings),
        take(sorted(test_idx), "test split", []),
    )
