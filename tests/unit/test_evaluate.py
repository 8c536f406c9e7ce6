"""Unit tests for `sentiment_mlops.evaluate`: hand-computed cases and agreement with sklearn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from rich.console import Console
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from sentiment_mlops.evaluate import (
    MAX_SHOWN_CLASSES,
    EvaluationReport,
    evaluate,
    print_report,
    save_report,
    shown_classes,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def random_case(n: int, classes: list[str], seed: int) -> tuple[list[str], np.ndarray]:
    """Seeded probabilities, with labels drawn from them so the classifier is informative."""
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.full(len(classes), 0.7), size=n)
    y_true = [classes[rng.choice(len(classes), p=row)] for row in proba]
    return y_true, proba


def test_perfect_classifier_has_ece_of_its_underconfidence() -> None:
    classes = ["neg", "pos"]
    y_true = ["neg", "pos", "pos", "neg"]
    proba = np.array([[0.95, 0.05], [0.15, 0.85], [0.25, 0.75], [0.65, 0.35]])

    report = evaluate(y_true, proba, classes, n_bins=5)

    assert report.accuracy == 1.0
    assert report.macro_f1 == 1.0
    assert report.roc_auc == 1.0
    assert report.confusion_matrix == [[2, 0], [0, 2]]
    # every prediction is right, so ECE is the mean gap between confidence and 1
    assert report.ece == pytest.approx(np.mean([0.05, 0.15, 0.25, 0.35]))
    assert report.calibration["count"] == [0, 0, 0, 2, 2]
    assert report.calibration["confidence"][:3] == [None, None, None]
    assert report.calibration["confidence"][3:] == pytest.approx([0.7, 0.9])
    assert report.calibration["accuracy"][3:] == [1.0, 1.0]
    assert report.calibration["bin_edges"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_ece_matches_hand_computation() -> None:
    classes = ["neg", "pos"]
    y_true = ["pos", "neg", "pos", "neg", "pos"]
    proba = np.array([[0.4, 0.6], [0.3, 0.7], [0.1, 0.9], [0.8, 0.2], [0.95, 0.05]])

    report = evaluate(y_true, proba, classes, n_bins=4)

    # bin (0.5, 0.75]: confidences 0.6 (right), 0.7 (wrong) -> |0.5 - 0.65| = 0.15, weight 2/5
    # bin (0.75, 1]: 0.9 (right), 0.8 (right), 0.95 (wrong) -> |2/3 - 2.65/3|, weight 3/5
    expected = 2 / 5 * 0.15 + 3 / 5 * abs(2 / 3 - 2.65 / 3)
    assert expected == pytest.approx(0.19)
    assert report.ece == pytest.approx(expected)
    assert report.calibration["count"] == [0, 0, 2, 3]
    assert report.calibration["accuracy"][2:] == pytest.approx([0.5, 2 / 3])
    assert report.accuracy == pytest.approx(3 / 5)


def test_confusion_matrix_and_per_class_follow_classes_order() -> None:
    classes = ["pos", "neg", "neutral"]
    one_hot = {label: np.eye(3)[i] * 0.8 + 0.2 / 3 for i, label in enumerate(classes)}
    pairs = [  # (true, predicted)
        ("pos", "pos"), ("pos", "pos"), ("pos", "neg"),
        ("neg", "neg"), ("neg", "neutral"),
        ("neutral", "neutral"), ("neutral", "neutral"), ("neutral", "pos"),
    ]  # fmt: skip
    y_true = [true for true, _ in pairs]
    proba = np.array([one_hot[predicted] for _, predicted in pairs])

    report = evaluate(y_true, proba, classes)

    assert report.classes == classes
    assert report.confusion_matrix == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert report.per_class["pos"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert report.per_class["neg"] == pytest.approx(
        {"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2}
    )
    assert report.per_class["neutral"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert report.accuracy == pytest.approx(5 / 8)
    assert report.macro_f1 == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)


@pytest.mark.parametrize(
    ("classes", "seed"), [(["neg", "pos"], 0), (["negative", "neutral", "positive"], 1)]
)
def test_agrees_with_sklearn(classes: list[str], seed: int) -> None:
    y_true, proba = random_case(300, classes, seed)
    y_pred = [classes[i] for i in proba.argmax(axis=1)]

    report = evaluate(y_true, proba, classes)

    assert report.n_samples == 300
    assert report.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    assert report.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert report.log_loss == pytest.approx(log_loss(y_true, proba, labels=classes))
    if len(classes) == 2:
        expected_auc = roc_auc_score(np.array(y_true) == classes[1], proba[:, 1])
    else:
        expected_auc = roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)
    assert report.roc_auc == pytest.approx(expected_auc)
    assert 0.0 <= report.ece <= 1.0


def test_class_order_only_permutes_the_report() -> None:
    classes = ["negative", "neutral", "positive"]
    y_true, proba = random_case(200, classes, seed=2)
    order = [2, 0, 1]

    sorted_report = evaluate(y_true, proba, classes)
    shuffled_report = evaluate(y_true, proba[:, order], [classes[i] for i in order])

    assert shuffled_report.metrics() == pytest.approx(sorted_report.metrics())
    assert shuffled_report.per_class == sorted_report.per_class
    assert shuffled_report.confusion_matrix[0] == [
        sorted_report.confusion_matrix[2][i] for i in order
    ]


def test_roc_auc_is_none_when_a_class_is_missing() -> None:
    classes = ["negative", "neutral", "positive"]
    y_true = ["negative", "positive", "positive", "negative"]
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])

    report = evaluate(y_true, proba, classes)

    assert report.roc_auc is None
    assert "roc_auc" not in report.metrics()
    assert set(report.metrics()) == {"accuracy", "macro_f1", "log_loss", "ece"}
    assert set(report.roc_curves) == {"negative", "positive"}


def test_binary_roc_auc_is_none_with_one_class_present() -> None:
    report = evaluate(["pos", "pos"], np.array([[0.2, 0.8], [0.6, 0.4]]), ["neg", "pos"])

    assert report.roc_auc is None
    assert report.roc_curves == {}


def test_roc_curves_are_thinned_and_span_the_unit_square() -> None:
    classes = ["negative", "neutral", "positive"]
    y_true, proba = random_case(5000, classes, seed=3)

    report = evaluate(y_true, proba, classes)

    assert set(report.roc_curves) == set(classes)
    for curve in report.roc_curves.values():
        assert 2 <= len(curve["fpr"]) == len(curve["tpr"]) <= 200
        assert (curve["fpr"][0], curve["tpr"][0]) == (0.0, 0.0)
        assert (curve["fpr"][-1], curve["tpr"][-1]) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("y_true", "proba", "classes", "message"),
    [
        (["neg", "pos"], np.full((3, 2), 0.5), ["neg", "pos"], "shape"),
        (["neg", "pos"], np.full((2, 3), 1 / 3), ["neg", "pos"], "shape"),
        (["neg", "meh"], np.full((2, 2), 0.5), ["neg", "pos"], "not in classes"),
        ([], np.empty((0, 2)), ["neg", "pos"], "empty"),
        (["neg", "pos"], np.array([[0.5, 0.6], [0.5, 0.5]]), ["neg", "pos"], "sum to 1"),
        (["neg", "pos"], np.array([[2.0, -1.0], [0.5, 0.5]]), ["neg", "pos"], r"\[0, 1\]"),
        (["neg"], np.ones((1, 1)), ["neg"], "at least 2 classes"),
        (["neg"], np.full((1, 2), 0.5), ["neg", "neg"], "unique"),
    ],
)
def test_invalid_input_raises(
    y_true: list[str], proba: np.ndarray, classes: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(y_true, proba, classes)


def test_to_dict_is_strict_json() -> None:
    y_true, proba = random_case(50, ["neg", "pos"], seed=4)

    report = evaluate(y_true, proba, ["neg", "pos"])

    assert json.loads(json.dumps(report.to_dict(), allow_nan=False)) == report.to_dict()


@pytest.mark.parametrize(
    ("classes", "drop"),
    [(["neg", "pos"], None), (["negative", "neutral", "positive"], None), (["a", "b", "c"], "b")],
)
def test_save_report_writes_json_and_readable_pngs(
    tmp_path: Path, classes: list[str], drop: str | None
) -> None:
    y_true, proba = random_case(120, classes, seed=5)
    if drop is not None:  # a class missing from y_true: no AUC, plots must still render
        keep = [i for i, label in enumerate(y_true) if label != drop]
        y_true, proba = [y_true[i] for i in keep], proba[keep]
    report = evaluate(y_true, proba, classes)
    directory = tmp_path / "nested" / "reports"

    paths = save_report(report, directory)

    names = ["report.json", "confusion_matrix.png", "roc.png", "reliability.png"]
    assert paths == [directory / name for name in names]
    assert json.loads(paths[0].read_text(encoding="utf-8")) == report.to_dict()
    for png in paths[1:]:
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        image = imread(png)
        assert image.shape[0] > 0
        assert image.shape[1] > 0


def test_print_report_shows_classes_metrics_and_matrix() -> None:
    classes = ["negative", "neutral", "positive"]
    y_true, proba = random_case(90, classes, seed=6)
    report: EvaluationReport = evaluate(y_true, proba, classes)
    console = Console(record=True, width=120)

    print_report(report, console)

    text = console.export_text()
    for label in classes:
        assert label in text
    assert f"{report.accuracy:.4f}" in text
    assert f"{report.ece:.4f}" in text
    assert "Confusion matrix" in text
    assert str(report.confusion_matrix[0][0]) in text


def many_classes_report(k: int) -> EvaluationReport:
    """`k` classes where class i has i + 1 test examples."""
    classes = [f"c{i:02d}" for i in range(k)]
    y_true = [label for i, label in enumerate(classes) for _ in range(i + 1)]
    proba = np.random.default_rng(7).dirichlet(np.ones(k), size=len(y_true))
    return evaluate(y_true, proba, classes)


def test_shown_classes_are_those_with_the_most_examples_in_class_order() -> None:
    report = many_classes_report(MAX_SHOWN_CLASSES + 10)
    assert shown_classes(report) == list(range(10, MAX_SHOWN_CLASSES + 10))
    few = many_classes_report(MAX_SHOWN_CLASSES)
    assert shown_classes(few) == list(range(MAX_SHOWN_CLASSES))


def test_plots_and_table_of_many_classes_show_the_largest_ones(tmp_path: Path) -> None:
    """A confusion matrix grows as the square of the classes: 100 took 30 s and 2.9 GB to
    draw, 5,000 never finished. Beyond MAX_SHOWN_CLASSES it shows the largest classes only."""
    k = MAX_SHOWN_CLASSES + 10
    report = many_classes_report(k)
    paths = save_report(report, tmp_path)
    assert json.loads(paths[0].read_text(encoding="utf-8"))["classes"] == report.classes
    shown_side = (0.8 * MAX_SHOWN_CLASSES + 2.0) * 120  # the figure of MAX_SHOWN_CLASSES
    matrix = imread(tmp_path / "confusion_matrix.png")
    assert matrix.shape[0] <= shown_side + 1
    console = Console(record=True, width=400)
    print_report(report, console)
    text = console.export_text()
    title = f"Confusion matrix, the {MAX_SHOWN_CLASSES} of {k} classes with the most test"
    assert title in text
    table = text[text.index(title) :]
    assert "c10" in table and "c29" in table and "c09" not in table
