"""The A/B analysis: numbers checked against scipy and statsmodels computed here, the
sequential test's error rate under peeking and its power by simulation, the paired design,
how many more labels are needed, and reading the log (windows, errors)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from scipy.stats import chi2_contingency
from sqlalchemy import create_engine, text
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize, proportions_ztest

from sentiment_mlops.abtest.analysis import Options, analyse
from sentiment_mlops.abtest.errors import AbTestError, PredictionLogUnavailable
from sentiment_mlops.abtest.log import parse_since, read_log
from sentiment_mlops.abtest.report import print_report
from sentiment_mlops.abtest.statistics import (
    fixed_p_independent,
    msprt_p_values,
    required_independent,
    required_pairs,
    sequential_critical_z,
    sequential_p_independent,
    sequential_p_paired,
)
from sentiment_mlops.serving.predictions import OVERRIDE_EXPERIMENT
from tests.ab_logs import START, LogBuilder, new_log

SEED = 20261102
EXPERIMENTS = 1_000
LOOKS = 20
ALPHA = 0.05
# One-sided binomial margin for a rate estimated from EXPERIMENTS runs: 3 standard errors.
MARGIN = 3 * math.sqrt(ALPHA * (1 - ALPHA) / EXPERIMENTS)


@pytest.fixture
def log_url(tmp_path: Path) -> str:
    return new_log(tmp_path)


def test_report_names_the_more_accurate_variant(log_url: str) -> None:
    """0.80 vs 0.85, 5,000 labelled each (and 1,000 unlabelled each): the challenger wins,
    and the fixed-horizon p-value is the chi-square test of the 2x2 table (scipy) and the
    z-test (statsmodels) computed here."""
    LogBuilder().served("champion", 3, right=4000, wrong=1000, unlabelled=1000).served(
        "challenger", 4, right=4250, wrong=750, unlabelled=1000
    ).write(log_url, seed=SEED)

    report = analyse(read_log(log_url))

    champion, challenger = report.variants
    assert (champion.variant, champion.accuracy, champion.labelled) == ("champion", 0.80, 5000)
    assert (challenger.variant, challenger.accuracy, challenger.served) == (
        "challenger",
        0.85,
        6000,
    )
    assert challenger.coverage == pytest.approx(5000 / 6000)
    assert (
        champion.accuracy_ci is not None
        and champion.accuracy_ci[0] < 0.80 < champion.accuracy_ci[1]
    )
    (comparison,) = report.comparisons
    assert comparison.design == "independent"
    assert comparison.difference == pytest.approx(0.05)
    assert comparison.difference_ci is not None and 0 < comparison.difference_ci[0] < 0.05
    scipy_p = chi2_contingency([[4250, 750], [4000, 1000]], correction=False).pvalue
    _, statsmodels_p = proportions_ztest([4250, 4000], [5000, 5000])
    assert comparison.p_fixed == pytest.approx(scipy_p, rel=1e-9)
    assert comparison.p_fixed == pytest.approx(statsmodels_p, rel=1e-9)
    assert comparison.p_sequential is not None and comparison.p_sequential <= ALPHA
    assert report.recommendation.action == "promote"
    assert report.recommendation.command == "sentiment models promote 4 --alias champion"
    assert report.experiment == "exp-1" and report.experiment_most_recent


def test_a_worse_challenger_is_not_promoted(log_url: str) -> None:
    LogBuilder().served("champion", 3, right=850, wrong=150).served(
        "challenger", 4, right=700, wrong=300
    ).write(log_url, seed=SEED)
    report = analyse(read_log(log_url))
    assert report.recommendation.action == "keep"
    assert report.recommendation.command is None
    assert "less accurate" in report.recommendation.reason


def _aa_runs(rng: np.random.Generator, accuracy: float, per_look: int) -> tuple[np.ndarray, ...]:
    """Cumulative correct counts of two equally accurate arms, EXPERIMENTS x LOOKS."""
    size = (EXPERIMENTS, LOOKS)
    first = rng.binomial(per_look, accuracy, size=size).cumsum(axis=1)
    second = rng.binomial(per_look, accuracy, size=size).cumsum(axis=1)
    return first, second, np.arange(1, LOOKS + 1) * per_look


def test_sequential_test_keeps_its_error_rate_under_peeking() -> None:
    """1,000 A/A experiments (both arms 0.80 accurate, 250 labels per arm between looks),
    each looked at 20 times, stopping at the first p <= 0.05: the mSPRT's false-positive rate
    stays at 5% (it is conservative), the fixed-horizon test read at every look is far above."""
    first, second, nobs = _aa_runs(np.random.default_rng(SEED), 0.80, 250)
    sequential = sequential_p_independent(first, nobs, second, nobs, tau=0.02)
    naive = fixed_p_independent(first, nobs, second, nobs)
    sequential_rate = float((sequential.min(axis=1) <= ALPHA).mean())
    naive_rate = float((naive.min(axis=1) <= ALPHA).mean())
    print(
        f"A/A false positives at {LOOKS} looks: mSPRT {sequential_rate:.3f}, "
        f"fixed-horizon z-test {naive_rate:.3f}"
    )
    assert sequential_rate <= ALPHA + MARGIN
    assert naive_rate > 0.15
    # Read once, at the end, the fixed-horizon test is right: peeking is what breaks it.
    assert float((naive[:, -1] <= ALPHA).mean()) <= ALPHA + MARGIN


def test_sequential_test_holds_when_read_after_every_label() -> None:
    """The report takes the running minimum over every labelled prediction, from the first:
    500 A/A experiments of 4,000 labels split at random between the arms, read after each."""
    rng = np.random.default_rng(SEED)
    right = rng.random((500, 4000)) < 0.9
    second_arm = rng.random((500, 4000)) < 0.5
    p = sequential_p_independent(
        np.cumsum(right & ~second_arm, axis=1),
        np.cumsum(~second_arm, axis=1),
        np.cumsum(right & second_arm, axis=1),
        np.cumsum(second_arm, axis=1),
        tau=0.02,
    )
    assert float((p[:, -1] <= ALPHA).mean()) <= ALPHA + 3 * math.sqrt(ALPHA * 0.95 / 500)


def test_paired_sequential_test_keeps_its_error_rate_under_peeking() -> None:
    """1,000 paired A/A experiments (the models disagree on 10% of requests, each as often
    right), 200 labelled requests between looks, 20 looks."""
    rng = np.random.default_rng(SEED)
    outcome = rng.random((EXPERIMENTS, LOOKS * 200))
    wins, losses = outcome < 0.05, (outcome >= 0.05) & (outcome < 0.10)
    looks = np.arange(1, LOOKS + 1) * 200 - 1
    p = sequential_p_paired(
        wins.cumsum(axis=1)[:, looks], losses.cumsum(axis=1)[:, looks], looks + 1, tau=0.02
    )
    assert float((p[:, -1] <= ALPHA).mean()) <= ALPHA + MARGIN


def test_sequential_test_detects_a_real_difference() -> None:
    """0.80 vs 0.85 with 3,000 labels per arm, in 20 looks: the mSPRT rejects nearly always."""
    rng = np.random.default_rng(SEED)
    size = (EXPERIMENTS, LOOKS)
    first = rng.binomial(150, 0.80, size=size).cumsum(axis=1)
    second = rng.binomial(150, 0.85, size=size).cumsum(axis=1)
    nobs = np.arange(1, LOOKS + 1) * 150
    p = sequential_p_independent(first, nobs, second, nobs, tau=0.02)
    assert float((p[:, -1] <= ALPHA).mean()) >= 0.95


def test_mspr_p_value_properties() -> None:
    """p = 1 without information, running minimum over looks, and the critical value used for
    sample sizes is where the p-value reaches alpha."""
    assert msprt_p_values([0.0, 0.3], [0.0, 0.0], tau=0.02).tolist() == [1.0, 1.0]
    assert fixed_p_independent(50, 50, 70, 70) == 1.0  # all right on both sides: no variance
    p = msprt_p_values([0.05, 0.0], [1e-4, 1e-4], tau=0.02)
    assert p[1] == p[0] < 1
    variance = 3e-5
    z = sequential_critical_z(variance, 0.02, ALPHA)
    at_boundary = msprt_p_values([z * math.sqrt(variance)], [variance], tau=0.02)[0]
    assert at_boundary == pytest.approx(ALPHA, rel=1e-9)
    assert z > 1.96  # always-valid costs a larger critical value than one look


def test_paired_report_uses_mcnemar_and_says_so(log_url: str) -> None:
    """The challenger scored the champion's requests in shadow; the two agree on 960 of
    1,000 labelled requests. McNemar's exact test finds the 0.02 difference; the same
    accuracies from independent samples would not have."""
    LogBuilder().paired(
        ("champion", 3),
        ("challenger", 4),
        both=800,
        only_shadow=30,
        only_primary=10,
        neither=160,
        unlabelled=200,
    ).write(log_url, seed=SEED)

    report = analyse(read_log(log_url))

    champion, challenger = report.variants
    assert (champion.served, champion.shadow, challenger.served, challenger.shadow) == (
        1200,
        0,
        0,
        1200,
    )
    assert (champion.accuracy, challenger.accuracy) == (0.81, 0.83)
    (comparison,) = report.comparisons
    assert comparison.design == "paired" and "McNemar" in comparison.test
    assert comparison.discordant == (30, 10)
    expected = mcnemar([[800, 10], [30, 160]], exact=True).pvalue
    assert comparison.p_fixed == pytest.approx(expected, rel=1e-12)
    assert comparison.p_fixed < ALPHA < float(fixed_p_independent(830, 1000, 810, 1000))
    assert comparison.difference_ci is not None and comparison.difference_ci[0] > 0
    assert report.recommendation.action == "promote"

    console = Console(record=True, width=120)
    print_report(report, console)
    printed = console.export_text()
    assert "paired" in printed and "McNemar exact" in printed
    assert "sentiment models promote 4 --alias champion" in printed


def test_more_labels_needed_matches_statsmodels(log_url: str) -> None:
    """Not significant yet (0.80 both, 1,000 labelled each): the labels still needed for a
    0.02 difference are statsmodels' sample size for the fixed-horizon test, minus those
    already in; the sequential test needs more."""
    LogBuilder().served("champion", 3, right=800, wrong=200).served(
        "challenger", 4, right=800, wrong=200
    ).write(log_url, seed=SEED)
    log = read_log(log_url)

    fixed = analyse(log, Options(method="fixed", mde=0.02)).recommendation
    per_arm = max(
        NormalIndPower().solve_power(
            effect_size=abs(proportion_effectsize(target, 0.80)), alpha=0.05, power=0.8, ratio=1
        )
        for target in (0.82, 0.78)
    )
    assert fixed.action == "continue"
    assert fixed.more_labelled_needed == 2 * (math.ceil(per_arm) - 1000)
    assert f"about {fixed.more_labelled_needed:,} more labelled predictions" in fixed.reason

    sequential = analyse(log, Options(mde=0.02)).recommendation
    assert sequential.action == "continue"
    assert sequential.more_labelled_needed is not None
    assert sequential.more_labelled_needed > fixed.more_labelled_needed


def test_more_labels_needed_shrinks_as_labels_come_in(tmp_path: Path) -> None:
    needed = []
    for labelled in (500, 1000, 2000):
        folder = tmp_path / str(labelled)
        folder.mkdir()
        url = new_log(folder)
        right = labelled * 4 // 5
        LogBuilder().served("champion", 3, right=right, wrong=labelled - right).served(
            "challenger", 4, right=right, wrong=labelled - right
        ).write(url, seed=SEED)
        needed.append(analyse(read_log(url)).recommendation.more_labelled_needed)
    assert needed[0] > needed[1] > needed[2] > 0


def test_enough_labels_and_no_difference_keeps_the_champion(log_url: str) -> None:
    LogBuilder().served("champion", 3, right=2000, wrong=500).served(
        "challenger", 4, right=2000, wrong=500
    ).write(log_url, seed=SEED)
    decision = analyse(read_log(log_url), Options(mde=0.1)).recommendation
    assert (decision.action, decision.more_labelled_needed) == ("keep", 0)
    assert "no difference of 0.1 or more" in decision.reason


def test_sequential_sample_size_gives_the_power_it_promises() -> None:
    """At the sample size the report asks for (0.80 vs 0.75, MDE 0.05), 1,000 simulated
    experiments read at 20 looks reject in about 80% of runs; at the fixed-horizon size the
    mSPRT would be badly underpowered (why N is computed for the test in use)."""
    rng = np.random.default_rng(SEED)
    rates = {}
    for sequential in (True, False):
        per_arm, _ = required_independent(0.80, 0.05, 1.0, sequential=sequential)
        batch = np.diff(np.linspace(0, per_arm, LOOKS + 1).round().astype(int))
        sizes = np.broadcast_to(batch, (EXPERIMENTS, LOOKS))
        first = rng.binomial(sizes, 0.80).cumsum(axis=1)
        second = rng.binomial(sizes, 0.75).cumsum(axis=1)
        p = sequential_p_independent(first, batch.cumsum(), second, batch.cumsum(), tau=0.05)
        rates[sequential] = float((p[:, -1] <= ALPHA).mean())
    assert rates[True] >= 0.8 - MARGIN
    assert rates[False] < 0.65


def test_paired_design_needs_far_fewer_labels() -> None:
    """Models that disagree on 10% of requests: a 0.02 difference needs about a quarter of
    the labels of two independent samples; the fixed-horizon size is above statsmodels'
    one-sample normal size for the standardised per-request difference (the exact test needs
    more: tests/unit/test_abtest_decisions.py)."""
    pairs = required_pairs(0.10, 0.02, sequential=False)
    expected = NormalIndPower().solve_power(
        effect_size=0.02 / math.sqrt(0.10), alpha=0.05, power=0.8, ratio=0
    )
    assert math.ceil(expected) < pairs < 1.1 * expected
    assert 4 * pairs < sum(required_independent(0.80, 0.02, 1.0, sequential=False))
    assert 4 * required_pairs(0.10, 0.02) < sum(required_independent(0.80, 0.02, 1.0))


def test_default_experiment_is_the_most_recent_and_since_limits_the_window(log_url: str) -> None:
    LogBuilder("old").served("champion", 1, right=5, wrong=5).write(log_url)
    later = START + timedelta(days=1)
    LogBuilder("new").served("champion", 2, right=10, wrong=0).served(
        "challenger", 3, right=10, wrong=0
    ).write(log_url, start=later)

    assert read_log(log_url).experiment == "new"
    # Predictions whose variant an admin chose come later still, but are no experiment.
    LogBuilder(OVERRIDE_EXPERIMENT).served("challenger", 3, right=1, wrong=0).write(
        log_url, start=later + timedelta(days=1)
    )
    assert read_log(log_url).experiment == "new"
    old = read_log(log_url, experiment="old")
    assert (old.experiment, old.most_recent, len(old.variant)) == ("old", False, 10)
    windowed = read_log(log_url, since=later + timedelta(seconds=10))
    assert len(windowed.variant) == 10  # 20 requests one second apart from `later`
    with pytest.raises(AbTestError, match=r"no predictions for experiment 'old' since"):
        read_log(log_url, experiment="old", since=later)
    with pytest.raises(
        AbTestError, match=r"experiments in the log, most recent first: 'new', 'old'"
    ):
        read_log(log_url, experiment="nope")


def test_a_variant_that_changed_version_is_flagged_and_its_latest_promoted(log_url: str) -> None:
    """Read across the change (`across_versions`): the numbers mix versions 4 and 5, and the
    report says so. By default the change starts a new experiment: test_abtest_decisions."""
    LogBuilder().served("champion", 3, right=300, wrong=700).served(
        "challenger", 4, right=500, wrong=0
    ).write(log_url)
    later = START + timedelta(days=1)
    LogBuilder().served("champion", 3, right=300, wrong=700).served(
        "challenger", 5, right=500, wrong=0
    ).write(log_url, start=later)
    report = analyse(read_log(log_url), Options(across_versions=True))
    assert report.variants[1].model_versions == [4, 5]
    assert any("'challenger' served versions 4, 5" in w for w in report.warnings)
    assert report.recommendation.command == "sentiment models promote 5 --alias champion"


def test_unknown_baseline_is_refused(log_url: str) -> None:
    LogBuilder().served("a", 1, right=1, wrong=0).served("b", 2, right=1, wrong=0).write(log_url)
    with pytest.raises(AbTestError, match=r"no 'champion' variant \(it has 'a', 'b'\)"):
        analyse(read_log(log_url))
    assert [c.variant for c in analyse(read_log(log_url), Options(baseline="b")).comparisons] == [
        "a"
    ]


def test_empty_log_and_missing_tables_and_missing_file(tmp_path: Path, log_url: str) -> None:
    with pytest.raises(AbTestError, match="the prediction log has no predictions"):
        read_log(log_url)

    bare = tmp_path / "bare.db"
    engine = create_engine(f"sqlite:///{bare}")
    with engine.begin() as conn:
        conn.execute(text("create table unrelated (x integer)"))
    engine.dispose()
    with pytest.raises(PredictionLogUnavailable, match=r"no such table: predictions$"):
        read_log(f"sqlite:///{bare}")

    missing = tmp_path / "missing.db"
    with pytest.raises(PredictionLogUnavailable, match="no prediction log at"):
        read_log(f"sqlite:///{missing}")
    assert not missing.exists()  # reading did not create it


def test_unreachable_database_is_one_line() -> None:
    with pytest.raises(PredictionLogUnavailable) as caught:
        read_log("postgresql+psycopg2://user:secret@127.0.0.1:9/predictions")
    message = str(caught.value)
    assert message.startswith("cannot read the prediction log at postgresql+psycopg2://user:***@")
    assert "\n" not in message and "secret" not in message


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("7d", datetime(2026, 11, 3, 12, tzinfo=UTC)),
        ("24h", datetime(2026, 11, 9, 12, tzinfo=UTC)),
        ("30m", datetime(2026, 11, 10, 11, 30, tzinfo=UTC)),
        ("2w", datetime(2026, 10, 27, 12, tzinfo=UTC)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T09:30", datetime(2026, 11, 1, 9, 30, tzinfo=UTC)),
        ("2026-11-01T09:30+01:00", datetime(2026, 11, 1, 8, 30, tzinfo=UTC)),
        ("2026-11-01T09:30Z", datetime(2026, 11, 1, 9, 30, tzinfo=UTC)),
    ],
)
def test_since_accepts_iso_times_and_durations(given: str, expected: datetime) -> None:
    assert parse_since(given, now=datetime(2026, 11, 10, 12, tzinfo=UTC)) == expected


@pytest.mark.parametrize("given", ["yesterday", "7", "7y", "-1d", "2026-13-01", ""])
def test_since_refuses_anything_else(given: str) -> None:
    with pytest.raises(ValueError, match="neither an ISO date/time"):
        parse_since(given)
