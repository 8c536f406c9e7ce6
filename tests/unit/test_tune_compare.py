"""--promote-if-better's judgement: McNemar's exact test on the same test examples."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from sentiment_mlops.tuning.compare import compare_paired


def predictions(right: list[bool], labels: list[str]) -> list[str]:
    flip = {"positive": "negative", "negative": "positive"}
    return [y if ok else flip[y] for ok, y in zip(right, labels, strict=True)]


def paired(
    both: int, wins: int, losses: int, neither: int
) -> tuple[list[str], list[str], list[str]]:
    """Labels and two models' predictions with the given counts of outcome pairs."""
    new = [True] * both + [True] * wins + [False] * losses + [False] * neither
    old = [True] * both + [False] * wins + [True] * losses + [False] * neither
    labels = ["positive", "negative"] * (len(new) // 2) + ["positive"] * (len(new) % 2)
    return labels, predictions(new, labels), predictions(old, labels)


def test_counts_accuracies_and_the_exact_p_value() -> None:
    labels, new, old = paired(both=800, wins=30, losses=12, neither=158)
    result = compare_paired(labels, new, old)
    assert (result.examples, result.wins, result.losses) == (1000, 30, 12)
    assert result.new_accuracy == pytest.approx(0.830)
    assert result.old_accuracy == pytest.approx(0.812)
    assert result.p_value == pytest.approx(binomtest(12, 42, 0.5).pvalue)
    assert result.p_value < 0.05 and result.better


def test_a_gain_within_the_noise_does_not_promote() -> None:
    """Six more right answers out of 1,000 is +0.6 points of accuracy, and chance."""
    labels, new, old = paired(both=800, wins=20, losses=14, neither=166)
    result = compare_paired(labels, new, old)
    assert result.new_accuracy > result.old_accuracy
    assert result.p_value > 0.05 and not result.better


def test_identical_predictions_and_a_worse_model_do_not_promote() -> None:
    labels, new, _ = paired(both=90, wins=0, losses=0, neither=10)
    same = compare_paired(labels, new, new)
    assert same.p_value == 1.0 and not same.better
    labels, new, old = paired(both=50, wins=2, losses=40, neither=8)
    worse = compare_paired(labels, new, old)
    assert worse.p_value < 0.05 and not worse.better


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="one prediction of each model"):
        compare_paired(["positive"], ["positive"], [])
