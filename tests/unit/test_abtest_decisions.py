"""The A/B report's decisions against independent computations: the direction of a sequential
finding, a version change inside an experiment, the paired interval (a published reference
and its coverage by simulation), late labels read in the order they arrived, the sample sizes
(simulated power, statsmodels), Bonferroni, and the small defects a review found."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, optimize
from scipy.stats import norm
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize, proportions_ztest

from sentiment_mlops.abtest.analysis import Options, analyse, arrival_order
from sentiment_mlops.abtest.decision import Evidence, decide
from sentiment_mlops.abtest.log import ExperimentLog, read_log
from sentiment_mlops.abtest.statistics import (
    mcnemar_exact_power,
    paired_difference_ci,
    required_independent,
    required_pairs,
    sequential_p_independent,
)
from tests.ab_logs import START, LogBuilder, new_log

SEED = 20261207
ALPHA = 0.05


def paired_log(
    primary_right: np.ndarray,
    shadow_right: np.ndarray,
    *,
    versions: np.ndarray | None = None,
    labelled_at: np.ndarray | None = None,
) -> ExperimentLog:
    """An in-memory log of requests served by champion (version 3) and scored in shadow by
    challenger (`versions`, default 4), one second apart, labelled when they were made unless
    `labelled_at` says otherwise (NaN: no label)."""
    n = len(primary_right)
    versions = np.full(n, 4) if versions is None else versions
    made = np.arange(n, dtype=np.float64)
    at = made if labelled_at is None else labelled_at
    labelled = ~np.isnan(at)

    def both(primary: np.ndarray, shadow: np.ndarray) -> np.ndarray:
        return np.column_stack([primary, shadow]).ravel()

    return ExperimentLog(
        experiment="exp-1",
        most_recent=True,
        since=None,
        variant=both(np.full(n, "champion"), np.full(n, "challenger")).astype(np.str_),
        model_version=both(np.full(n, 3), versions).astype(np.int64),
        latency_ms=np.full(2 * n, 0.2),
        shadow=both(np.zeros(n, bool), np.ones(n, bool)),
        labelled=both(labelled, labelled),
        correct=both(primary_right & labelled, shadow_right & labelled),
        primary_variant=both(np.full(n, ""), np.full(n, "champion")).astype(np.str_),
        primary_correct=both(np.zeros(n, bool), primary_right & labelled),
        disagrees=both(np.zeros(n, bool), primary_right != shadow_right),
        created_at=both(made, made + 0.001),
        labelled_at=both(at, at),
    )


# (requests, champion right, challenger right): 30 discordant losses early, 40 wins late
LOST_EARLY_WON_LATE = (
    (270, True, True),
    (30, True, False),
    (360, True, True),
    (40, False, True),
)


def evidence(
    *,
    p: float,
    difference: float,
    difference_at_crossing: float | None,
    needed: int,
    more: dict[str, int],
) -> Evidence:
    """A sequential comparison of challenger (version 4) with champion after 1,000 labels,
    at the report's defaults (MDE 0.02, power 0.8, alpha 0.05)."""
    return Evidence(
        variant="challenger",
        baseline="champion",
        version=4,
        method="sequential",
        mde=0.02,
        power=0.8,
        alpha=0.05,
        p=p,
        difference=difference,
        difference_at_crossing=difference_at_crossing,
        have=1000,
        needed=needed,
        more=more,
    )


def blocks(*parts: tuple[int, bool, bool]) -> tuple[np.ndarray, np.ndarray]:
    """(count, primary right, shadow right) blocks in order."""
    primary = np.concatenate([np.full(count, p) for count, p, _ in parts])
    shadow = np.concatenate([np.full(count, s) for count, _, s in parts])
    return primary, shadow


# -- Defect 1: the direction is the one the evidence crossed in ------------------------------


def test_a_challenger_that_lost_early_and_wins_a_little_late_is_not_promoted() -> None:
    """The review's reproduction: 30 discordant losses early, 40 wins late. McNemar over all
    of it is far from significant; the mSPRT crossed, but while the challenger was losing."""
    primary, shadow = blocks(*LOST_EARLY_WON_LATE)
    report = analyse(paired_log(primary, shadow))

    (c,) = report.comparisons
    assert c.discordant == (40, 30)
    assert c.p_fixed == pytest.approx(mcnemar([[0, 30], [40, 0]], exact=True).pvalue, rel=1e-12)
    assert c.p_fixed > 0.2
    assert c.p_sequential is not None and c.p_sequential < 1e-3
    assert c.difference is not None and c.difference > 0
    assert c.crossed_at_labelled is not None and c.crossed_at_labelled <= 300
    assert c.difference_at_crossing is not None and c.difference_at_crossing < 0
    assert report.recommendation.action in ("keep", "continue")
    assert report.recommendation.command is None


def test_a_challenger_that_won_early_and_loses_late_is_not_promoted_either() -> None:
    primary, shadow = blocks(
        (270, True, True), (30, False, True), (360, True, True), (40, True, False)
    )
    decision = analyse(paired_log(primary, shadow)).recommendation
    assert decision.action == "keep"
    assert "relative accuracy changed" in decision.reason


def test_a_version_change_starts_a_new_experiment_unless_told_otherwise() -> None:
    """The realistic trigger: the challenger alias moved from version 4 to 5 mid-experiment.
    Version 5's record alone decides; across versions, the old evidence is read with it."""
    primary, shadow = blocks(*LOST_EARLY_WON_LATE)
    versions = np.where(np.arange(len(primary)) < 300, 4, 5)
    log = paired_log(primary, shadow, versions=versions)

    report = analyse(log)
    assert report.left_out == 600 and report.versions_since is not None
    assert report.versions_since == datetime.fromtimestamp(300, UTC)
    assert [v.model_versions for v in report.variants] == [[3], [5]]
    (c,) = report.comparisons
    assert (c.labelled, c.discordant) == (400, (40, 0))
    assert report.recommendation.command == "sentiment models promote 5 --alias champion"

    across = analyse(log, Options(across_versions=True))
    assert across.left_out == 0 and across.versions_since is None
    assert across.variants[1].model_versions == [4, 5]
    assert any("served versions 4, 5" in w for w in across.warnings)
    assert across.recommendation.action == "keep"
    assert "versions_since" in across.to_dict()


# -- Defect 2: the paired interval ---------------------------------------------------------


def test_paired_interval_matches_the_published_square_and_add_interval() -> None:
    """Fagerland, Lydersen and Laake, "Statistical Analysis of Contingency Tables" (2017),
    chapter 8, Cavo et al. (2012): table [[59, 6], [16, 80]], Newcombe's square-and-add
    interval -0.0621 (-0.1186 to -0.0046), as printed by the R package contingencytables."""
    low, high = paired_difference_ci(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)


@pytest.mark.parametrize(
    ("wins", "losses"), [(0.05, 0.05), (0.09, 0.01), (0.10, 0.0)], ids=["even", "most", "never"]
)
def test_paired_interval_covers_the_true_difference(wins: float, losses: float) -> None:
    """500 labelled pairs, the models disagreeing on 10% of them: the 95% interval covers the
    true difference in at least 94% of 2,000 simulated experiments whoever wins the
    disagreements (the previous interval: 0.95, 0.78, 0.44)."""
    rng = np.random.default_rng(SEED)
    tables = rng.multinomial(500, [0.75, wins, losses, 0.15], 2000)
    truth = wins - losses
    covered = [
        low <= truth <= high
        for low, high in (paired_difference_ci(*map(int, table)) for table in tables)
    ]
    assert np.mean(covered) >= 0.94


# -- Defect 3: late labels, read in the order they arrived ----------------------------------


def test_reads_of_an_experiment_with_late_labels_never_raise_its_p_value(tmp_path: Path) -> None:
    """The same experiment read every 10 minutes while labels arrive up to hours late: each
    read's sequential p-value is at most the previous read's (the sequence a reader saw is
    only appended to). In prediction order, a late label rewrites what earlier reads tested."""
    builder = (
        LogBuilder()
        .served("champion", 3, right=2400, wrong=600)
        .served("challenger", 4, right=2490, wrong=510)
    )
    reads = []
    for minutes in range(10, 110, 10):
        folder = tmp_path / str(minutes)
        folder.mkdir()
        url = new_log(folder)
        builder.write(url, seed=SEED, label_delay=1800.0, until=START + timedelta(minutes=minutes))
        (c,) = analyse(read_log(url)).comparisons
        reads.append(c.p_sequential)
    assert all(p is not None for p in reads)
    assert reads == sorted(reads, reverse=True), reads
    assert reads[-1] < 1.0  # the test did move: the check above is not about p = 1 throughout


def test_arrival_order_follows_the_feedback_then_the_predictions() -> None:
    primary, shadow = blocks((4, True, True))
    log = paired_log(primary, shadow, labelled_at=np.array([5.0, np.nan, 2.0, 2.0]))
    pairs = log.shadow
    assert arrival_order(log, pairs).tolist() == [5, 7, 1]


def test_aa_with_late_labels_stays_within_alpha() -> None:
    """1,000 A/A experiments of 2,000 labels, labels arriving after an exponential delay of
    mean 300 requests, read every 100 requests: declaring a difference at any read happens in
    at most 5% of them (plus three standard errors of the simulation) when the labels are read
    in arrival order, as `arrival_order` does."""
    rng = np.random.default_rng(SEED)
    experiments, n = 1000, 2000
    rejected = 0
    for _ in range(experiments):
        arm = rng.random(n) < 0.5
        right = rng.random(n) < 0.8
        arrival = np.arange(n) + rng.exponential(300.0, n)
        log = _independent_log(arm, right, arrival)
        order = arrival_order(log, ~log.shadow)
        first_read = np.inf
        for read in range(100, n + 1, 100):
            seen = order[arrival[order] <= read]
            a, r = arm[seen], right[seen]
            p = sequential_p_independent(
                np.cumsum(r & ~a), np.cumsum(~a), np.cumsum(r & a), np.cumsum(a), tau=0.02
            )
            first_read = min(first_read, p[-1] if len(p) else 1.0)
        rejected += first_read <= ALPHA
    assert rejected / experiments <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / experiments)


def _independent_log(arm: np.ndarray, right: np.ndarray, arrival: np.ndarray) -> ExperimentLog:
    n = len(arm)
    return ExperimentLog(
        experiment="aa",
        most_recent=True,
        since=None,
        variant=np.where(arm, "challenger", "champion").astype(np.str_),
        model_version=np.where(arm, 4, 3).astype(np.int64),
        latency_ms=np.full(n, 0.2),
        shadow=np.zeros(n, bool),
        labelled=np.ones(n, bool),
        correct=right,
        primary_variant=np.full(n, "").astype(np.str_),
        primary_correct=np.zeros(n, bool),
        disagrees=np.zeros(n, bool),
        created_at=np.arange(n, dtype=np.float64),
        labelled_at=arrival,
    )


# -- The mSPRT against a numerical integral ------------------------------------------------


def test_paired_sequential_p_is_the_mixture_integral_at_the_mde() -> None:
    """Λ computed here by integrating the likelihood ratio over θ ~ N(0, MDE²) (scipy's
    quad), at every look, running-minimised: the report's paired p-value, for MDE 0.02 and
    0.05 (a mixing scale other than the MDE gives other numbers)."""
    rng = np.random.default_rng(SEED)
    outcome = rng.choice(4, size=400, p=[0.75, 0.07, 0.03, 0.15])
    primary, shadow = np.isin(outcome, [0, 2]), np.isin(outcome, [0, 1])
    log = paired_log(primary, shadow)
    d = shadow.astype(int) - primary.astype(int)
    for mde in (0.02, 0.05):
        (c,) = analyse(log, Options(mde=mde)).comparisons
        p = 1.0
        for k in range(1, len(d) + 1):
            theta, v = d[:k].mean(), np.abs(d[:k]).sum() / k**2
            if v == 0:
                continue
            ratio, _ = integrate.quad(
                lambda t, theta=theta, v=v, mde=mde: (
                    math.exp((2 * t * theta - t * t) / (2 * v) - t * t / (2 * mde * mde))
                    / (mde * math.sqrt(2 * math.pi))
                ),
                -10 * mde,
                10 * mde,
                points=[0.0, theta],
            )
            p = min(p, 1 / ratio)
        assert c.p_sequential == pytest.approx(min(p, 1.0), rel=1e-6)


# -- Sample sizes ----------------------------------------------------------------------------


def test_fixed_horizon_paired_size_gives_mcnemars_exact_test_its_power() -> None:
    """At 10% disagreement and a 0.02 difference, 2,000 simulated experiments at the size the
    report asks for: statsmodels' exact McNemar test rejects in at least 80% (within three
    standard errors), and the power computed exactly agrees with the simulation; at the
    normal approximation's size the exact test had only about 0.77."""
    pairs = required_pairs(0.10, 0.02, sequential=False)
    normal = math.ceil(
        NormalIndPower().solve_power(
            effect_size=0.02 / math.sqrt(0.10), alpha=0.05, power=0.8, ratio=0
        )
    )
    assert pairs > normal
    assert mcnemar_exact_power(pairs, 0.10, 0.02, 0.05) >= 0.8
    assert mcnemar_exact_power(normal, 0.10, 0.02, 0.05) < 0.79
    rng = np.random.default_rng(SEED)
    runs = 2000
    counts = rng.multinomial(pairs, [0.06, 0.04, 0.90], runs)
    cache: dict[tuple[int, int], float] = {}
    rejections = 0
    for wins, losses, _ in counts.tolist():
        if (wins, losses) not in cache:
            cache[wins, losses] = mcnemar([[0, losses], [wins, 0]], exact=True).pvalue
        rejections += cache[wins, losses] <= 0.05
    error = 3 * math.sqrt(0.8 * 0.2 / runs)
    assert rejections / runs >= 0.8 - error
    assert rejections / runs == pytest.approx(
        mcnemar_exact_power(pairs, 0.10, 0.02, 0.05), abs=error
    )


def test_with_no_labels_yet_the_paired_size_uses_how_often_the_models_disagree() -> None:
    """Their predicted labels differ on 10% of requests: the labels needed are those for 10%
    disagreement (3,803 pairs), not for disagreeing on only the MDE (761)."""
    primary, shadow = blocks((900, True, True), (100, True, False))
    log = paired_log(primary, shadow, labelled_at=np.full(1000, np.nan))
    decision = analyse(log).recommendation
    assert decision.more_labelled_needed == required_pairs(0.10, 0.02)
    assert decision.more_labelled_needed > 3000


def test_labels_needed_at_a_90_10_split_are_statsmodels_sizes(tmp_path: Path) -> None:
    """900 champion and 100 challenger labels (0.80 each): at the fixed horizon the report
    needs statsmodels' sizes for a 1:9 ratio, and says how many of each variant."""
    url = new_log(tmp_path)
    LogBuilder().served("champion", 3, right=720, wrong=180).served(
        "challenger", 4, right=80, wrong=20
    ).write(url, seed=SEED)
    decision = analyse(read_log(url), Options(method="fixed")).recommendation
    n1 = max(
        NormalIndPower().solve_power(
            effect_size=abs(proportion_effectsize(t, 0.80)), alpha=0.05, power=0.8, ratio=1 / 9
        )
        for t in (0.82, 0.78)
    )
    champion, challenger = math.ceil(n1) - 900, math.ceil(n1 / 9) - 100
    assert decision.more_labelled_needed == champion + challenger
    assert decision.more_labelled_needed_by_variant == {
        "challenger": challenger,
        "champion": champion,
    }
    assert f"{challenger:,} of challenger, {champion:,} of champion" in decision.reason


def test_sequential_size_at_a_90_10_split_gives_the_msprt_its_power() -> None:
    """The baseline's labels at which the mSPRT, read once at the end, has 80% power against
    0.80 ± 0.02 with a 1:9 split: found here by root-finding on the normal power of Cohen's h
    against the critical value solved from the paper's Λ (Johari et al. 2017, eq. for the
    normal mixture), for the variance of that split."""
    tau, sigma2, ratio = 0.02, 0.8 * 0.2, 1 / 9

    def critical_z(v: float) -> float:
        def log_lambda(z: float) -> float:
            return 0.5 * math.log(v / (v + tau**2)) + tau**2 * z * z / (2 * (v + tau**2))

        return float(optimize.brentq(lambda z: log_lambda(z) - math.log(1 / ALPHA), 0, 100))

    def power(n1: float) -> float:
        z = critical_z(sigma2 * (1 / n1 + 1 / (ratio * n1)))
        scale = math.sqrt(1 / n1 + 1 / (ratio * n1))
        return min(
            float(norm.sf(z - e) + norm.cdf(-z - e))
            for e in (abs(proportion_effectsize(t, 0.80)) / scale for t in (0.82, 0.78))
        )

    expected = optimize.brentq(lambda n: power(n) - 0.8, 100, 1e7)
    baseline, challenger = required_independent(0.80, 0.02, ratio)
    assert baseline == pytest.approx(expected, abs=1.0)
    assert challenger == math.ceil(baseline * ratio)


def test_an_uneven_split_says_what_each_variant_still_needs() -> None:
    decision = decide(
        evidence(
            p=0.5,
            difference=0.01,
            difference_at_crossing=None,
            needed=6_500_000,
            more={"challenger": 6_300, "champion": 6_300_000},
        )
    )
    assert "6,300 of challenger, 6,300,000 of champion, at this traffic split" in decision.reason


# -- Several challengers -------------------------------------------------------------------


def _counts_with_p_between(low: float, high: float) -> int:
    """Correct answers out of 2,000 whose z-test against 1,600/2,000 has low < p < high."""
    for right in range(1601, 2000):
        _, p = proportions_ztest([right, 1600], [2000, 2000])
        if low < p < high:
            return right
    raise AssertionError("no count")


def test_two_challengers_each_significant_only_alone_are_not_promoted(tmp_path: Path) -> None:
    right = _counts_with_p_between(ALPHA / 2, ALPHA)
    url = new_log(tmp_path)
    LogBuilder().served("champion", 3, right=1600, wrong=400).served(
        "a", 4, right=right, wrong=2000 - right
    ).served("b", 5, right=right, wrong=2000 - right).write(url, seed=SEED)
    report = analyse(read_log(url), Options(method="fixed"))
    assert all(ALPHA / 2 < (c.p_fixed or 0) < ALPHA for c in report.comparisons)
    assert report.recommendation.action != "promote"
    alone = tmp_path / "alone"
    alone.mkdir()
    url = new_log(alone)
    LogBuilder().served("champion", 3, right=1600, wrong=400).served(
        "a", 4, right=right, wrong=2000 - right
    ).write(url, seed=SEED)
    assert analyse(read_log(url), Options(method="fixed")).recommendation.action == "promote"


def test_of_two_better_challengers_the_larger_improvement_is_promoted(tmp_path: Path) -> None:
    url = new_log(tmp_path)
    LogBuilder().served("champion", 3, right=1600, wrong=400).served(
        "a", 4, right=1900, wrong=100
    ).served("b", 5, right=1750, wrong=250).write(url, seed=SEED)
    report = analyse(read_log(url))
    assert [c.decision.action for c in report.comparisons] == ["promote", "promote"]
    assert report.recommendation.command == "sentiment models promote 4 --alias champion"


# -- Small defects --------------------------------------------------------------------------


def test_wilson_interval_of_each_accuracy(tmp_path: Path) -> None:
    """9 of 10 right: the Wilson interval computed here from its formula (a Wald interval
    would be [0.714, 1.086])."""
    url = new_log(tmp_path)
    LogBuilder().served("champion", 3, right=9, wrong=1).write(url)
    (summary,) = analyse(read_log(url)).variants
    z, n, p = norm.ppf(0.975), 10, 0.9
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert summary.accuracy_ci == pytest.approx((centre - half, centre + half), rel=1e-12)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mde": 0}, "mde must be at least 0.0001 and below 0.5, not 0"),
        ({"mde": 1e-300}, "mde must be at least 0.0001"),
        ({"mde": 0.5}, "mde must be at least 0.0001"),
        ({"alpha": 1.5}, "alpha must be above 0 and below 1"),
        ({"power": 0.01}, "power must be above alpha"),
    ],
)
def test_impossible_options_are_refused_by_name(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Options(**options)  # type: ignore[arg-type]


def test_a_reason_never_prints_minus_zero() -> None:
    decision = decide(
        evidence(
            p=0.01,
            difference=-0.0,
            difference_at_crossing=-0.00001,
            needed=100,
            more={"challenger": 0},
        )
    )
    assert decision.action == "keep"
    assert "-0.0000" not in decision.reason and "0.0000" in decision.reason
