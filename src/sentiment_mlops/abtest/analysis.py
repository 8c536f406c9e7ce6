"""The analysis of one experiment's log: a summary per variant, each challenger compared with
the baseline (paired or independent design), and the decision: promote, keep, or continue."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from sentiment_mlops.abtest.decision import Decision, Evidence, Method, decide, overall
from sentiment_mlops.abtest.errors import AbTestError
from sentiment_mlops.abtest.log import ExperimentLog, current_versions
from sentiment_mlops.abtest.statistics import (
    ALPHA,
    POWER,
    BoolArray,
    FloatArray,
    first_crossing,
    fixed_p_independent,
    mcnemar_exact_p,
    paired_difference_ci,
    required_independent,
    required_pairs,
    sequential_p_independent,
    sequential_p_paired,
)
from sentiment_mlops.config import CHAMPION, DEFAULT_MDE

Design = Literal["paired", "independent"]

# The smallest minimum detectable effect: a hundredth of a point of accuracy already needs
# billions of labels, and below it the mSPRT's mixing scale τ² underflows.
MIN_MDE = 1e-4


@dataclass(frozen=True)
class Options:
    """What the report decides with: the baseline variant, the minimum detectable effect (an
    absolute accuracy difference), which p-value drives the recommendation, alpha and power;
    `across_versions` reads the whole window even when a variant changed model version in it
    (by default the experiment restarts at the latest change: see `log.current_versions`)."""

    baseline: str = CHAMPION
    mde: float = DEFAULT_MDE  # also the mSPRT's mixing scale τ: tuned to effects of this size
    method: Method = "sequential"
    alpha: float = ALPHA
    power: float = POWER
    across_versions: bool = False

    def __post_init__(self) -> None:
        if not MIN_MDE <= self.mde < 0.5:
            raise ValueError(f"mde must be at least {MIN_MDE:g} and below 0.5, not {self.mde!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be above 0 and below 1, not {self.alpha!r}")
        if not self.alpha < self.power < 1:
            raise ValueError(f"power must be above alpha and below 1, not {self.power!r}")
        if self.method not in ("sequential", "fixed"):
            raise ValueError(f"method must be 'sequential' or 'fixed', not {self.method!r}")


@dataclass(frozen=True)
class VariantSummary:
    variant: str
    model_versions: list[int]  # in order of last use: the last is the one serving now
    served: int  # predictions answered to clients
    served_share: float  # of all served predictions in the experiment
    shadow: int  # predictions scored in shadow of another variant's
    labelled: int  # of served + shadow, those whose request got feedback
    coverage: float
    accuracy: float | None
    accuracy_ci: tuple[float, float] | None  # Wilson, 95%
    latency_p50_ms: float
    latency_p99_ms: float


@dataclass(frozen=True)
class Comparison:
    """`variant` against `baseline`: difference = variant accuracy - baseline accuracy, on the
    labelled predictions of the design (for a paired one, the labelled shadowed requests)."""

    variant: str
    baseline: str
    design: Design
    test: str
    labelled: int  # paired: requests; independent: both samples
    baseline_accuracy: float | None
    variant_accuracy: float | None
    difference: float | None
    difference_ci: tuple[float, float] | None  # 95%, fixed-horizon
    p_fixed: float | None
    p_sequential: float | None  # always valid
    discordant: tuple[int, int] | None  # paired: (only the variant right, only the baseline)
    decision: Decision
    # The sequential test's first look at p <= alpha (labels in the order they arrived), and
    # the difference then: the direction the decision follows. None while it has not crossed.
    crossed_at_labelled: int | None = None
    difference_at_crossing: float | None = None


@dataclass(frozen=True)
class Report:
    experiment: str
    experiment_most_recent: bool
    since: datetime | None
    options: Options
    variants: list[VariantSummary]
    comparisons: list[Comparison]
    recommendation: Decision
    warnings: list[str] = field(default_factory=list)
    # Where a variant changed model version, the experiment restarts at the first prediction
    # after the latest change; the predictions before it are left out (None: nothing was).
    versions_since: datetime | None = None
    left_out: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: the numbers the tables show, unrounded."""
        data = asdict(self)
        for key in ("since", "versions_since"):
            moment = getattr(self, key)
            data[key] = None if moment is None else moment.isoformat()
        return data


def analyse(log: ExperimentLog, options: Options | None = None) -> Report:
    """Summaries per variant and each variant's comparison with the baseline."""
    options = options or Options()
    names = sorted(set(log.variant.tolist()))
    if options.baseline not in names:
        raise AbTestError(
            f"experiment {log.experiment!r} has no {options.baseline!r} variant "
            f"(it has {', '.join(repr(n) for n in names)}); choose one with --baseline"
        )
    versions = {name: _latest_version(log, name) for name in names}
    whole = log
    if not options.across_versions:
        log = current_versions(log)
    ordered = [options.baseline, *(n for n in names if n != options.baseline)]
    summaries = [_summary(log, name) for name in ordered]
    challengers = ordered[1:]
    # Several variants against one baseline: Bonferroni keeps the chance of any false
    # promotion at alpha.
    alpha = options.alpha / max(1, len(challengers))
    comparisons = [_compare(log, name, options, alpha, versions[name]) for name in challengers]
    warnings = [
        f"{s.variant!r} served versions {', '.join(map(str, s.model_versions))} in this window: "
        "its numbers mix them (--since can start after the last change)"
        for s in summaries
        if len(s.model_versions) > 1
    ]
    left_out = len(whole.variant) - len(log.variant)
    return Report(
        experiment=log.experiment,
        experiment_most_recent=log.most_recent,
        since=log.since,
        options=options,
        variants=summaries,
        comparisons=comparisons,
        recommendation=overall([(c.difference, c.decision) for c in comparisons], options.baseline),
        warnings=warnings,
        versions_since=_moment(log.created_at[0]) if left_out and len(log.variant) else None,
        left_out=left_out,
    )


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(float(seconds), UTC)


def _summary(log: ExperimentLog, name: str) -> VariantSummary:
    rows = log.variant == name
    served = int((rows & ~log.shadow).sum())
    labelled = int((rows & log.labelled).sum())
    correct = int((rows & log.correct).sum())
    versions = log.model_version[rows]
    latest_first = list(dict.fromkeys(versions[::-1].tolist()))
    latency = log.latency_ms[rows]
    p50, p99 = np.percentile(latency, [50, 99]) if len(latency) else (math.nan, math.nan)
    total_served = int((~log.shadow).sum())
    return VariantSummary(
        variant=name,
        model_versions=latest_first[::-1],
        served=served,
        served_share=served / total_served if total_served else 0.0,
        shadow=int((rows & log.shadow).sum()),
        labelled=labelled,
        coverage=labelled / int(rows.sum()) if rows.any() else 0.0,
        accuracy=correct / labelled if labelled else None,
        accuracy_ci=_wilson(correct, labelled),
        latency_p50_ms=float(p50),
        latency_p99_ms=float(p99),
    )


def _wilson(count: int, nobs: int) -> tuple[float, float] | None:
    if not nobs:
        return None
    low, high = proportion_confint(count, nobs, alpha=0.05, method="wilson")
    return float(low), float(high)


def arrival_order(log: ExperimentLog, rows: BoolArray) -> npt.NDArray[np.intp]:
    """Indices of the labelled `rows` in the order their feedback arrived (ties in the order
    the predictions were made).

    The sequential test's guarantee holds for the sequence a reader watches grow. Feedback
    comes late and out of order, so in prediction order each read would insert labels into
    the prefixes an earlier read already tested, and the p-value could rise between reads;
    in arrival order a later read only appends.
    """
    chosen = np.flatnonzero(rows & log.labelled)
    return chosen[np.argsort(log.labelled_at[chosen], kind="stable")]


def _compare(
    log: ExperimentLog, name: str, options: Options, alpha: float, version: int
) -> Comparison:
    pairs = log.shadow & (log.variant == name) & (log.primary_variant == options.baseline)
    if pairs.any():
        return _compare_paired(log, name, pairs, options, alpha, version)
    return _compare_independent(log, name, options, alpha, version)


def _crossing(
    p_path: FloatArray, differences: FloatArray, options: Options, alpha: float
) -> tuple[int | None, float | None]:
    """(labels at the crossing, difference then) for the test in use: the sequential test's
    first look at p <= alpha; the fixed-horizon test's only look, the last."""
    if options.method == "fixed":
        return len(differences), float(differences[-1])
    at = first_crossing(p_path, alpha)
    return (None, None) if at is None else (at + 1, float(differences[at]))


def _compare_paired(
    log: ExperimentLog, name: str, pairs: BoolArray, options: Options, alpha: float, version: int
) -> Comparison:
    order = arrival_order(log, pairs)
    ours, theirs = log.correct[order], log.primary_correct[order]
    n = len(ours)
    won, lost = np.cumsum(ours & ~theirs), np.cumsum(theirs & ~ours)
    wins, losses = (int(won[-1]), int(lost[-1])) if n else (0, 0)
    both = int((ours & theirs).sum())
    difference = ci = p_fixed = p_seq = None
    crossed_at = at_crossing = None
    if n:
        looks = np.arange(1, n + 1)
        p_path = sequential_p_paired(won, lost, looks, options.mde)
        difference, p_fixed, p_seq = (wins - losses) / n, mcnemar_exact_p(wins, losses), p_path[-1]
        ci = paired_difference_ci(both, wins, losses, n - both - wins - losses)
        p = p_seq if options.method == "sequential" else p_fixed
        if p <= alpha:
            crossed_at, at_crossing = _crossing(p_path, (won - lost) / looks, options, alpha)
    # How often the two disagree is known from every paired request, labelled or not (their
    # predicted labels differ); for two classes it is the share of discordant pairs, for more
    # an upper bound: sizing with it errs towards more labels.
    discordance = float(log.disagrees[pairs].mean())
    needed = required_pairs(
        discordance,
        options.mde,
        alpha=alpha,
        power=options.power,
        sequential=options.method == "sequential",
    )
    decision = _decision(
        name,
        options,
        alpha,
        version,
        p=p_seq if options.method == "sequential" else p_fixed,
        difference=difference,
        at_crossing=at_crossing,
        have=n,
        needed=needed,
        more={name: max(0, needed - n)},
    )
    return Comparison(
        variant=name,
        baseline=options.baseline,
        design="paired",
        test="McNemar exact (paired on shadow predictions)",
        labelled=n,
        baseline_accuracy=(both + losses) / n if n else None,
        variant_accuracy=(both + wins) / n if n else None,
        difference=difference,
        difference_ci=ci,
        p_fixed=p_fixed,
        p_sequential=None if p_seq is None else float(p_seq),
        discordant=(wins, losses),
        decision=decision,
        crossed_at_labelled=crossed_at,
        difference_at_crossing=at_crossing,
    )


def _compare_independent(
    log: ExperimentLog, name: str, options: Options, alpha: float, version: int
) -> Comparison:
    served = ~log.shadow
    order = arrival_order(log, served & ((log.variant == name) | (log.variant == options.baseline)))
    arm = log.variant[order] == name  # True where the label is the variant's
    right = log.correct[order]
    c1, n1 = np.cumsum(right & ~arm), np.cumsum(~arm)
    c2, n2 = np.cumsum(right & arm), np.cumsum(arm)
    k1, m1 = (int(c1[-1]), int(n1[-1])) if len(arm) else (0, 0)
    k2, m2 = (int(c2[-1]), int(n2[-1])) if len(arm) else (0, 0)
    difference = ci = p_fixed = p_seq = None
    crossed_at = at_crossing = None
    if m1 and m2:
        difference = k2 / m2 - k1 / m1
        low, high = confint_proportions_2indep(
            k2, m2, k1, m1, method="newcomb", compare="diff", alpha=0.05
        )
        ci = (float(low), float(high))
        p_fixed = float(fixed_p_independent(k2, m2, k1, m1))
        p_path = sequential_p_independent(c1, n1, c2, n2, options.mde)
        p_seq = float(p_path[-1])
        p = p_seq if options.method == "sequential" else p_fixed
        if p <= alpha:
            with np.errstate(divide="ignore", invalid="ignore"):
                differences = c2 / n2 - c1 / n1
            crossed_at, at_crossing = _crossing(p_path, differences, options, alpha)
    base_accuracy = k1 / m1 if m1 else (k2 / m2 if m2 else 0.5)
    traffic = _traffic_ratio(log, name, options.baseline, m1, m2)
    need1, need2 = required_independent(
        base_accuracy,
        options.mde,
        traffic,
        alpha=alpha,
        power=options.power,
        sequential=options.method == "sequential",
    )
    decision = _decision(
        name,
        options,
        alpha,
        version,
        p=p_seq if options.method == "sequential" else p_fixed,
        difference=difference,
        at_crossing=at_crossing,
        have=m1 + m2,
        needed=need1 + need2,
        more={name: max(0, need2 - m2), options.baseline: max(0, need1 - m1)},
    )
    return Comparison(
        variant=name,
        baseline=options.baseline,
        design="independent",
        test="two-proportion z-test (independent samples)",
        labelled=m1 + m2,
        baseline_accuracy=k1 / m1 if m1 else None,
        variant_accuracy=k2 / m2 if m2 else None,
        difference=difference,
        difference_ci=ci,
        p_fixed=p_fixed,
        p_sequential=p_seq,
        discordant=None,
        decision=decision,
        crossed_at_labelled=crossed_at,
        difference_at_crossing=at_crossing,
    )


def _decision(
    name: str,
    options: Options,
    alpha: float,
    version: int,
    *,
    p: float | None,
    difference: float | None,
    at_crossing: float | None,
    have: int,
    needed: int,
    more: dict[str, int],
) -> Decision:
    """`decide` on one comparison's numbers, with the options it was made under."""
    return decide(
        Evidence(
            variant=name,
            baseline=options.baseline,
            version=version,
            method=options.method,
            mde=options.mde,
            power=options.power,
            alpha=alpha,
            p=p,
            difference=difference,
            difference_at_crossing=at_crossing,
            have=have,
            needed=needed,
            more=more,
        )
    )


def _traffic_ratio(log: ExperimentLog, name: str, baseline: str, m1: int, m2: int) -> float:
    """The variant's labels per baseline label: as labelled so far, else as served, else 1."""
    if m1 and m2:
        return m2 / m1
    served = ~log.shadow
    ours, theirs = (
        int((served & (log.variant == name)).sum()),
        int((served & (log.variant == baseline)).sum()),
    )
    return ours / theirs if ours and theirs else 1.0


def _latest_version(log: ExperimentLog, name: str) -> int:
    return int(log.model_version[log.variant == name][-1])
