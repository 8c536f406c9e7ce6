"""The tests behind the A/B report and the sample sizes they need: the mSPRT's always-valid
p-values (independent and paired), the fixed-horizon two-proportion z-test, and the labelled
predictions each design needs for the power at the minimum detectable effect."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy.stats import binom, norm
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    proportion_confint,
    proportion_effectsize,
    test_proportions_2indep,
)

FloatArray = npt.NDArray[np.float64]  # one element per prediction, or per look
BoolArray = npt.NDArray[np.bool_]


ALPHA = 0.05
POWER = 0.8


def msprt_p_values(difference: npt.ArrayLike, variance: npt.ArrayLike, tau: float) -> FloatArray:
    """Always-valid p-values of the mSPRT with a normal mixture, one per look (last axis).

    Johari, Koomen, Pekelis and Walsh, "Peeking at A/B tests: why it matters, and what to do
    about it", KDD 2017 (and "Always valid inference", Operations Research 70(3), 2022). At a
    look, `difference` is the estimated effect θ̂ and `variance` its variance under the null,
    v. Mixing the alternative over θ ~ N(0, τ²) gives the likelihood ratio in closed form:

        Λ = sqrt(v / (v + τ²)) · exp(τ² θ̂² / (2 v (v + τ²)))

    (the paper's σ²/n is v). The p-value is min(1, 1/Λ), running-minimised over the looks so
    far: Λ is a martingale under the null, so by Ville's inequality the chance that any look
    has p ≤ alpha is at most alpha, however many looks. The paper plugs in the sample
    variance; the callers here plug in the null's (pooled) variance, which is never zero while
    the two sides differ (the error rate is checked by simulation in the tests). A look with
    no variance yet (no data, or every outcome equal) has p = 1.
    """
    theta = np.asarray(difference, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    t2 = tau * tau
    known = v > 0
    safe_v = np.where(known, v, 1.0)
    log_lr = 0.5 * np.log(safe_v / (safe_v + t2)) + t2 * theta**2 / (2 * safe_v * (safe_v + t2))
    p = np.minimum(1.0, np.exp(-np.where(known, log_lr, 0.0)))
    return np.minimum.accumulate(p, axis=-1)


def sequential_critical_z(variance: float, tau: float, alpha: float) -> float:
    """|θ̂|/sqrt(v) at which `msprt_p_values` reaches `alpha` at a look of variance v.

    Solving 1/Λ = alpha for θ̂ in the formula above:
    z² = (1 + v/τ²) (2 ln(1/alpha) + ln(1 + τ²/v)).
    """
    ratio = variance / (tau * tau)
    return math.sqrt((1 + ratio) * (2 * math.log(1 / alpha) + math.log1p(1 / ratio)))


def sequential_p_independent(
    count1: npt.ArrayLike,
    nobs1: npt.ArrayLike,
    count2: npt.ArrayLike,
    nobs2: npt.ArrayLike,
    tau: float,
) -> FloatArray:
    """mSPRT p-values for p2 - p1 of two independent samples, from cumulative counts per look
    (last axis); the variance of the difference is the pooled one under the null."""
    c1, n1, c2, n2 = (np.asarray(a, dtype=np.float64) for a in (count1, nobs1, count2, nobs2))
    both = (n1 > 0) & (n2 > 0)
    m1, m2 = np.where(both, n1, 1.0), np.where(both, n2, 1.0)
    pooled = (c1 + c2) / (m1 + m2)
    variance = np.where(both, pooled * (1 - pooled) * (1 / m1 + 1 / m2), 0.0)
    return msprt_p_values(c2 / m2 - c1 / m1, variance, tau)


def sequential_p_paired(
    wins: npt.ArrayLike, losses: npt.ArrayLike, pairs: npt.ArrayLike, tau: float
) -> FloatArray:
    """mSPRT p-values for paired outcomes, from cumulative counts per look (last axis):
    `wins` pairs only the variant got right, `losses` only the baseline, of `pairs`.

    The difference is (wins - losses)/pairs with null variance (wins + losses)/pairs², so
    θ̂²/v is McNemar's statistic.
    """
    w, lo, n = (np.asarray(a, dtype=np.float64) for a in (wins, losses, pairs))
    m = np.where(n > 0, n, 1.0)
    return msprt_p_values((w - lo) / m, np.where(n > 0, (w + lo) / m**2, 0.0), tau)


def first_crossing(p_values: FloatArray, alpha: float) -> int | None:
    """The first look at which an always-valid p-value reached `alpha` (None: not yet).

    The direction of a sequential test's finding is the sign of the difference at that look:
    the evidence that crossed was evidence for that sign. A difference read later can have
    the other sign (a model that lost early and wins a little late), and deciding from it
    would use evidence earned by the opposite direction.
    """
    crossed = np.flatnonzero(np.asarray(p_values) <= alpha)
    return int(crossed[0]) if len(crossed) else None


def paired_difference_ci(
    both: int, wins: int, losses: int, neither: int, alpha: float = ALPHA
) -> tuple[float, float]:
    """Confidence interval of p_variant - p_baseline from paired outcomes: Newcombe (1998),
    "Improved confidence intervals for the difference between binomial proportions based on
    paired data", Statistics in Medicine 17, method 10.

    Each accuracy gets its Wilson interval, and the two are combined by "square and add"
    with their correlation (the phi coefficient of the 2x2 table, shrunk towards 0 by n/2
    when positive). Unlike an interval for the share of disagreements won, it accounts for
    the uncertainty of how often the models disagree: a Clopper-Pearson interval of that
    share, scaled by the observed disagreement rate, covers 0.78 of the time when one model
    wins most disagreements (`benchmarks/ab_peeking.py`).
    """
    n = both + wins + losses + neither
    p1, p2 = (both + wins) / n, (both + losses) / n
    (l1, l2), (u1, u2) = proportion_confint([both + wins, both + losses], n, alpha, "wilson")
    margins = (both + wins) * (losses + neither) * (both + losses) * (wins + neither)
    cross = both * neither - wins * losses
    if margins == 0:
        phi = 0.0
    elif cross > n / 2:
        phi = (cross - n / 2) / math.sqrt(margins)
    else:
        phi = min(cross, 0) / math.sqrt(margins)
    d1, e2 = p1 - l1, u2 - p2
    e1, d2 = u1 - p1, p2 - l2
    low = p1 - p2 - math.sqrt(max(0.0, d1 * d1 - 2 * phi * d1 * e2 + e2 * e2))
    high = p1 - p2 + math.sqrt(max(0.0, d2 * d2 - 2 * phi * d2 * e1 + e1 * e1))
    return max(-1.0, float(low)), min(1.0, float(high))


def mcnemar_exact_power(pairs: int, discordance: float, difference: float, alpha: float) -> float:
    """Power of McNemar's exact test (`mcnemar_exact_p`) on `pairs` labelled pairs when the
    models disagree on a share `discordance` of them and the variant is more accurate by
    `difference`: the number of disagreements is binomial, and given k of them the variant's
    wins are Binomial(k, (discordance + difference) / (2 discordance)); the exact test rejects
    when the smaller of wins and losses is at most the largest c with P(Bin(k, 1/2) <= c) <=
    alpha/2.
    """
    if difference <= 0 or discordance <= 0:
        return alpha
    win = min(1.0, (discordance + difference) / (2 * discordance))
    low, high = binom.ppf([1e-12, 1 - 1e-12], pairs, discordance)
    k = np.arange(int(low), int(high) + 1)
    c = binom.ppf(alpha / 2, k, 0.5)
    c = np.where(binom.cdf(c, k, 0.5) > alpha / 2, c - 1, c)
    reject = binom.cdf(c, k, win) + binom.sf(k - c - 1, k, win)
    reject = np.where(c >= 0, reject, 0.0)
    return float(np.sum(binom.pmf(k, pairs, discordance) * reject))


def mcnemar_exact_p(wins: int, losses: int) -> float:
    """Two-sided p-value of McNemar's exact test from the discordant pairs of a paired
    comparison: `wins` examples only the new model got right, `losses` only the old one.

    Under the null (both equally accurate) each discordant pair is a fair coin, so this is
    the binomial test of wins out of wins + losses (statsmodels' `mcnemar(exact=True)`);
    the pairs both models got right, or both wrong, say nothing about which is better.
    """
    return float(mcnemar([[0, losses], [wins, 0]], exact=True).pvalue)


def fixed_p_independent(
    count1: npt.ArrayLike, nobs1: npt.ArrayLike, count2: npt.ArrayLike, nobs2: npt.ArrayLike
) -> FloatArray:
    """Two-sided p-value of the pooled two-proportion z-test of p1 = p2 (element-wise).

    statsmodels' score test of the difference without the small-sample correction: at a
    difference of 0 its variance is the pooled one, i.e. the classic z-test (equal to the
    chi-square test of the 2x2 table without continuity correction). Where every outcome is
    the same (no variance), there is no evidence of a difference: p = 1.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        _, p = test_proportions_2indep(
            count1, nobs1, count2, nobs2, method="score", correction=False, return_results=False
        )
    return np.nan_to_num(np.asarray(p, dtype=np.float64), nan=1.0)


def _sample_size(
    effect_size: float,
    variance_at: Callable[[float], float],
    *,
    ratio: float,
    alpha: float,
    power: float,
    tau: float,
    sequential: bool,
) -> float:
    """Observations in the first sample (statsmodels' `NormalIndPower`; `ratio` 0: one sample)
    for `power` at `effect_size` (standardised).

    For the sequential test, the z-test's critical value is replaced by the mSPRT's at that
    sample size (`sequential_critical_z`), which grows slowly with it: solved by iterating.
    The mSPRT may cross earlier too, so this errs on the side of more.
    """
    solver = NormalIndPower()
    nobs = float(solver.solve_power(effect_size=effect_size, alpha=alpha, power=power, ratio=ratio))
    if not sequential:
        return nobs
    for _ in range(100):
        z = sequential_critical_z(variance_at(nobs), tau, alpha)
        level = float(2 * norm.sf(z))
        again = float(
            solver.solve_power(effect_size=effect_size, alpha=level, power=power, ratio=ratio)
        )
        if abs(again - nobs) < 0.5:
            return again
        nobs = again
    return nobs


def required_independent(
    accuracy: float,
    mde: float,
    ratio: float,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
    sequential: bool = True,
) -> tuple[int, int]:
    """Labelled predictions (baseline, variant) to detect a difference of `mde` either way
    from a baseline `accuracy`, the variant getting `ratio` times the baseline's labels.

    Cohen's h (`proportion_effectsize`) for `NormalIndPower`, in whichever direction needs
    more; the mSPRT's mixing scale is the MDE.
    """
    sigma2 = max(accuracy * (1 - accuracy), 1e-9)

    def variance_at(nobs1: float) -> float:
        return sigma2 * (1 / nobs1 + 1 / (ratio * nobs1))

    sizes = []
    for target in (accuracy + mde, accuracy - mde):
        if not 0 < target < 1:
            continue  # an accuracy above 1 or below 0 cannot be detected
        h = abs(float(proportion_effectsize(target, accuracy)))
        sizes.append(
            _sample_size(
                h,
                variance_at,
                ratio=ratio,
                alpha=alpha,
                power=power,
                tau=mde,
                sequential=sequential,
            )
        )
    if not sizes:
        raise ValueError(f"a minimum detectable effect of {mde:g} leaves no accuracy in (0, 1)")
    nobs1 = max(sizes)
    return math.ceil(nobs1), math.ceil(nobs1 * ratio)


def required_pairs(
    discordance: float,
    mde: float,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
    sequential: bool = True,
) -> int:
    """Labelled paired predictions to detect a difference of `mde` when the two models
    disagree on a share `discordance` of the requests.

    The per-request difference (+1, 0, -1) has null variance equal to the discordance (taken
    as at least `mde`: a difference of `mde` needs that many disagreements), so the effect
    size is mde / sqrt(discordance), for a one-sample `NormalIndPower` (ratio 0). That normal
    size gives McNemar's exact test less than `power` (0.765 for 0.80 at 10% discordance: the
    exact test is conservative), so the fixed-horizon size is the smallest that gives the
    exact test its power (`mcnemar_exact_power`), searched up from the normal one.
    """
    sigma2 = max(discordance, mde)
    if not sequential:
        return _exact_pairs(sigma2, mde, alpha=alpha, power=power)
    nobs = _sample_size(
        mde / math.sqrt(sigma2),
        lambda n: sigma2 / n,
        ratio=0.0,
        alpha=alpha,
        power=power,
        tau=mde,
        sequential=sequential,
    )
    return math.ceil(nobs)


def _exact_pairs(discordance: float, mde: float, *, alpha: float, power: float) -> int:
    """The smallest number of pairs (to within 0.5%) at which McNemar's exact test has
    `power`: its power grows with the pairs except for the exact test's small saw-teeth, so
    a geometric search up from the normal size then a bisection."""
    normal = NormalIndPower().solve_power(
        effect_size=mde / math.sqrt(discordance), alpha=alpha, power=power, ratio=0
    )
    low = high = math.ceil(float(normal))
    while mcnemar_exact_power(high, discordance, mde, alpha) < power:
        low, high = high, math.ceil(high * 1.05) + 1
    while high - low > max(1, low // 200):
        middle = (low + high) // 2
        if mcnemar_exact_power(middle, discordance, mde, alpha) < power:
            low = middle
        else:
            high = middle
    return high
