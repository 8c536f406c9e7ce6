"""Evaluate a fitted classifier's predicted probabilities on held-out data.

One call turns `(y_true, proba, classes)` into an `EvaluationReport`: the scalar metrics a
tracking server logs, the per-class and confusion-matrix detail a person reads, and the
calibration and ROC data behind the plots. The report is saved as JSON plus PNG plots and
printed as tables. This module is a leaf: it imports nothing else from the package.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import (
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_ROC_POINTS = 200
SUM_TOLERANCE = 1e-6
# The confusion matrix (plotted and printed) and the ROC plot show at most this many classes,
# those with the most test examples: the matrix of 100 classes took 30 s and 2.9 GB to draw,
# of 5,000 it never finished. report.json holds every class.
MAX_SHOWN_CLASSES = 20

REPORT_FILE = "report.json"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
ROC_FILE = "roc.png"
RELIABILITY_FILE = "reliability.png"


@dataclass(frozen=True)
class EvaluationReport:
    """Everything measured on one held-out set, in plain Python types (JSON-ready).

    `per_class` maps each class to precision, recall, f1 and support. `confusion_matrix` rows
    are true classes and columns predicted classes, both in `classes` order. `calibration`
    holds the reliability-diagram bins: `bin_edges` (n_bins + 1), and per bin `confidence`
    (mean top-class probability), `accuracy` and `count`; empty bins have `None` confidence
    and accuracy. `roc_curves` maps a class to its one-vs-rest curve (`fpr`, `tpr`, at most
    `MAX_ROC_POINTS` points): only the positive class `classes[1]` when binary, every class
    with both positives and negatives in `y_true` otherwise.
    """

    classes: list[str]
    n_samples: int
    accuracy: float
    macro_f1: float
    log_loss: float
    ece: float
    roc_auc: float | None
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    calibration: dict[str, Any]
    roc_curves: dict[str, dict[str, list[float]]]

    def to_dict(self) -> dict[str, Any]:
        """The whole report as a JSON-serialisable dict (the content of `report.json`)."""
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """The scalar metrics only, as a tracking server logs them; `roc_auc` if defined."""
        scalars = {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "log_loss": self.log_loss,
            "ece": self.ece,
        }
        if self.roc_auc is not None:
            scalars["roc_auc"] = self.roc_auc
        return scalars


def evaluate(
    y_true: Sequence[str],
    proba: np.ndarray,
    classes: Sequence[str],
    n_bins: int = 15,
) -> EvaluationReport:
    """Measure predictions `argmax(proba)` against `y_true`.

    `proba` has one row per sample and one column per class, in `classes` order (as
    `predict_proba` with `classes_`); each row must sum to 1. ECE uses the top-class
    confidence in `n_bins` equal-width bins over [0, 1], each bin holding the confidences in
    (lower, upper]. Raises ValueError when the inputs do not fit together.
    """
    labels, y, p = _validate(y_true, proba, classes, n_bins)
    k = len(labels)
    indices = list(range(k))
    pred = p.argmax(axis=1)
    confidence = p.max(axis=1)
    correct = pred == y

    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=indices, zero_division=0
    )
    per_class = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    calibration, ece = _calibration(confidence, correct, n_bins)
    return EvaluationReport(
        classes=labels,
        n_samples=len(y),
        accuracy=float(correct.mean()),
        macro_f1=float(f1.mean()),
        log_loss=float(log_loss(y, p, labels=indices)),
        ece=ece,
        roc_auc=_roc_auc(y, p),
        per_class=per_class,
        confusion_matrix=confusion_matrix(y, pred, labels=indices).tolist(),
        calibration=calibration,
        roc_curves=_roc_curves(y, p, labels),
    )


def save_report(report: EvaluationReport, directory: Path) -> list[Path]:
    """Write `report.json` and the confusion-matrix, ROC and reliability PNGs to `directory`.

    Plots are drawn on their own Agg canvases, so pyplot's global state is left untouched.
    Returns the paths written, JSON first. Matplotlib is imported here, not with the module
    (~0.5 s), so fitting and scoring without plots do not pay for it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    directory.mkdir(parents=True, exist_ok=True)
    report_path = directory / REPORT_FILE
    report_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    plots = {
        CONFUSION_MATRIX_FILE: _plot_confusion_matrix(report),
        ROC_FILE: _plot_roc(report),
        RELIABILITY_FILE: _plot_reliability(report),
    }
    paths = [report_path]
    for name, figure in plots.items():
        path = directory / name
        FigureCanvasAgg(figure)
        figure.savefig(path, dpi=120)
        paths.append(path)
    return paths


def print_report(report: EvaluationReport, console: Console | None = None) -> None:
    """Print the scalar metrics, the per-class report and the confusion matrix as tables."""
    console = console or Console()
    metrics = Table(title=f"Metrics (n={report.n_samples})")
    metrics.add_column("Metric")
    metrics.add_column("Value", justify="right")
    for name, value in report.metrics().items():
        metrics.add_row(name, f"{value:.4f}")

    per_class = Table(title="Per class")
    per_class.add_column("Class")
    for column in ("Precision", "Recall", "F1", "Support"):
        per_class.add_column(column, justify="right")
    for label, scores in report.per_class.items():
        per_class.add_row(
            label,
            f"{scores['precision']:.4f}",
            f"{scores['recall']:.4f}",
            f"{scores['f1']:.4f}",
            str(int(scores["support"])),
        )

    shown = shown_classes(report)
    labels = [report.classes[i] for i in shown]
    matrix = Table(
        title=f"Confusion matrix{_shown_note(report, shown)} (rows: true, columns: predicted)"
    )
    matrix.add_column("true \\ predicted")
    for label in labels:
        matrix.add_column(label, justify="right")
    for label, row in zip(labels, _shown_matrix(report, shown), strict=True):
        matrix.add_row(label, *(str(count) for count in row))

    for table in (metrics, per_class, matrix):
        console.print(table)


def shown_classes(report: EvaluationReport) -> list[int]:
    """Indices of the classes the confusion matrix and the ROC plot show, in class order:
    all of them, or the `MAX_SHOWN_CLASSES` with the most test examples (ties: class order)."""
    k = len(report.classes)
    if k <= MAX_SHOWN_CLASSES:
        return list(range(k))
    support = [report.per_class[label]["support"] for label in report.classes]
    return sorted(sorted(range(k), key=lambda i: (-support[i], i))[:MAX_SHOWN_CLASSES])


def _shown_note(report: EvaluationReport, shown: list[int]) -> str:
    if len(shown) == len(report.classes):
        return ""
    return f", the {len(shown)} of {len(report.classes)} classes with the most test examples"


def _shown_matrix(report: EvaluationReport, shown: list[int]) -> np.ndarray:
    return np.array(report.confusion_matrix)[np.ix_(shown, shown)]


def _validate(
    y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str], n_bins: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Check the inputs once; return the class names, class indices of `y_true`, and `proba`.

    Rows are renormalised after the check so float32 rounding does not trip sklearn's own
    stricter sum check.
    """
    labels = [str(label) for label in classes]
    if len(labels) < 2:
        raise ValueError(f"need at least 2 classes, got {labels}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"classes must be unique, got {labels}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if len(y_true) == 0:
        raise ValueError("y_true is empty: nothing to evaluate")

    position = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(label) for label in y_true} - position.keys())
    if unknown:
        raise ValueError(f"y_true has labels not in classes {labels}: {unknown[:10]}")
    y = np.array([position[str(label)] for label in y_true], dtype=np.intp)

    p = np.asarray(proba, dtype=np.float64)
    expected = (len(y), len(labels))
    if p.shape != expected:
        raise ValueError(
            f"proba has shape {p.shape}, expected {expected} "
            "(one row per sample, one column per class in `classes` order)"
        )
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ValueError("proba must hold finite probabilities in [0, 1]")
    sums = p.sum(axis=1)
    if not np.allclose(sums, 1.0, rtol=0, atol=SUM_TOLERANCE):
        worst = int(np.abs(sums - 1.0).argmax())
        raise ValueError(
            f"proba rows must sum to 1; row {worst} sums to {sums[worst]:.6g} "
            "(pass predict_proba output, not decision scores)"
        )
    return labels, y, p / sums[:, np.newaxis]


def _calibration(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int
) -> tuple[dict[str, Any], float]:
    """Reliability-diagram bins over the top-class confidence, and the ECE they imply."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    confidence_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bins, weights=correct.astype(np.float64), minlength=n_bins)
    filled = counts > 0
    mean_confidence = confidence_sum[filled] / counts[filled]
    accuracy = correct_sum[filled] / counts[filled]
    ece = float(np.sum(counts[filled] * np.abs(accuracy - mean_confidence)) / counts.sum())

    per_bin_confidence: list[float | None] = [None] * n_bins
    per_bin_accuracy: list[float | None] = [None] * n_bins
    for i, conf, acc in zip(np.flatnonzero(filled), mean_confidence, accuracy, strict=True):
        per_bin_confidence[i] = float(conf)
        per_bin_accuracy[i] = float(acc)
    calibration = {
        "bin_edges": edges.tolist(),
        "confidence": per_bin_confidence,
        "accuracy": per_bin_accuracy,
        "count": counts.tolist(),
    }
    return calibration, ece


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Binary: AUC of class 1. Multiclass: macro one-vs-rest. None if a class is absent."""
    k = p.shape[1]
    if len(np.unique(y)) < k:
        return None
    if k == 2:
        return float(roc_auc_score(y, p[:, 1]))
    return float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(k))))


def _roc_curves(
    y: np.ndarray, p: np.ndarray, labels: list[str]
) -> dict[str, dict[str, list[float]]]:
    """One-vs-rest ROC points per class, thinned to `MAX_ROC_POINTS` to keep reports small."""
    curves: dict[str, dict[str, list[float]]] = {}
    positives = [1] if len(labels) == 2 else range(len(labels))
    for i in positives:
        is_positive = y == i
        if is_positive.all() or not is_positive.any():
            continue
        fpr, tpr, _ = roc_curve(is_positive, p[:, i])
        if len(fpr) > MAX_ROC_POINTS:
            keep = np.unique(np.linspace(0, len(fpr) - 1, MAX_ROC_POINTS).round().astype(int))
            fpr, tpr = fpr[keep], tpr[keep]
        curves[labels[i]] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    return curves


def _plot_confusion_matrix(report: EvaluationReport) -> Figure:
    """Counts as a heat map, annotated, with class names on both axes (`shown_classes`)."""
    from matplotlib.figure import Figure

    shown = shown_classes(report)
    matrix = _shown_matrix(report, shown)
    k = len(shown)
    side = max(4.0, 0.8 * k + 2.0)
    figure = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=ax)
    ticks = np.arange(k)
    labels = [report.classes[i] for i in shown]
    ax.set_xticks(ticks, labels=labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=labels)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(f"Confusion matrix{_shown_note(report, shown)}", wrap=True)
    threshold = matrix.max() / 2
    for row in range(k):
        for col in range(k):
            count = matrix[row, col]
            colour = "white" if count > threshold else "black"
            ax.text(col, row, str(count), ha="center", va="center", color=colour)
    return figure


def _plot_roc(report: EvaluationReport) -> Figure:
    """ROC of the positive class (binary) or one-vs-rest per class (`shown_classes`), against
    chance."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 5), layout="constrained")
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    binary = len(report.classes) == 2
    shown = shown_classes(report)
    for label in (report.classes[i] for i in shown):
        if label not in report.roc_curves:
            continue
        curve = report.roc_curves[label]
        name = f"{label} (AUC = {report.roc_auc:.3f})" if binary else label
        ax.plot(curve["fpr"], curve["tpr"], label=name)
    if report.roc_auc is None:
        title = "ROC (AUC undefined: a class is missing from y_true)"
    elif binary:
        title = f"ROC, positive class {report.classes[1]}"
    else:
        title = f"One-vs-rest ROC (macro AUC = {report.roc_auc:.3f})"
    ax.set_title(title + _shown_note(report, shown), wrap=True)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    if len(ax.get_lines()) > 6:  # beside the axes, where it does not hide the curves
        figure.set_size_inches(8.5, 5)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    else:
        ax.legend(loc="lower right")
    return figure


def _plot_reliability(report: EvaluationReport) -> Figure:
    """Accuracy per confidence bin against the diagonal, with the bin counts below."""
    from matplotlib.figure import Figure

    calibration = report.calibration
    edges = np.array(calibration["bin_edges"])
    width = np.diff(edges)
    filled = [i for i, acc in enumerate(calibration["accuracy"]) if acc is not None]
    figure = Figure(figsize=(6, 6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])

    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    top.bar(
        edges[filled],
        [calibration["accuracy"][i] for i in filled],
        width=width[filled],
        align="edge",
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    top.plot(
        [calibration["confidence"][i] for i in filled],
        [calibration["accuracy"][i] for i in filled],
        marker="o",
        color="tab:red",
        label="accuracy at mean confidence",
    )
    top.set_ylabel("Accuracy")
    top.set_ylim(0, 1)
    top.set_title(f"Reliability diagram (ECE = {report.ece:.4f})")
    top.legend(loc="upper left")

    bottom.bar(edges[:-1], calibration["count"], width=width, align="edge", edgecolor="black")
    bottom.set_xlabel("Top-class confidence")
    bottom.set_ylabel("Count")
    bottom.set_xlim(0, 1)
    return figure
