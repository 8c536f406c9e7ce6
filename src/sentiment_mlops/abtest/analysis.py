"""The analysis of one experiment's log: a summary per variant, each challenger compared with
the baseline (paired or independent design), and the decision: promote, keep, or continue."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from sentiment_mlops.abtest.errors import AbTestError
from sentiment_mlops.abtest.log import ExperimentLog
from sentiment_mlops.abtest.statistics import (
    ALPHA,
    POWER,
    BoolArray,
    fixed_p_independent,
    mcnemar_exact_p,
    required_independent,
    required_pairs,
    sequential_p_independent,
    sequential_p_paired,
)
from sentiment_mlops.config import CHAMPION, DEFAULT_MDE

Method = Literal["sequential", "fixed"]
Action = Literal["promote", "keep", "continue"]
Design = Literal["paired", "independent"]


@dataclass(frozen=True)
class Options:
    """What the report decides with: the baseline variant, the minimum detectable effect (an
    absolute accuracy difference), which p-value drives the recommendation, alpha and power."""

    baseline: str = CHAMPION
    mde: float = DEFAULT_MDE  # also the mSPRT's mixing scale τ: tuned to effects of this size
    method: Method = "sequential"
    alpha: float = ALPHA
    power: float = POWER


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
class Decision:
    action: Action
    reason: str
    more_labelled_needed: int | None = None
    command: str | None = None  # what to run to act on it


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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: the numbers the tables show, unrounded."""
        data = asdict(self)
        data["since"] = None if self.since is None else self.since.isoformat()
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
    ordered = [options.baseline, *(n for n in names if n != options.baseline)]
    summaries = [_summary(log, name) for name in ordered]
    challengers = ordered[1:]
    # Several variants against one baseline: Bonferroni keeps the chance of any false
    # promotion at alpha.
    alpha = options.alpha / max(1, len(challengers))
    comparisons = [_compare(log, name, options, alpha) for name in challengers]
    warnings = [
        f"{s.variant!r} served versions {', '.join(map(str, s.model_versions))} in this window: "
        "its numbers mix them (--since can start after the last change)"
        for s in summaries
        if len(s.model_versions) > 1
    ]
    return Report(
        experiment=log.experiment,
        experiment_most_recent=log.most_recent,
        since=log.since,
        options=options,
        variants=summaries,
        comparisons=comparisons,
        recommendation=_overall(comparisons, options.baseline),
        warnings=warnings,
    )


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


def _compare(log: ExperimentLog, name: str, options: Options, alpha: float) -> Comparison:
    pairs = log.shadow & (log.variant == name) & (log.primary_variant == options.baseline)
    if pairs.any():
        return _compare_paired(log, name, pairs & log.labelled, options, alpha)
    return _compare_independent(log, name, options, alpha)


def _compare_paired(
    log: ExperimentLog, name: str, labelled: BoolArray, options: Options, alpha: float
) -> Comparison:
    ours, theirs = log.correct[labelled], log.primary_correct[labelled]
    n = len(ours)
    wins, losses = int((ours & ~theirs).sum()), int((theirs & ~ours).sum())
    both = int((ours & theirs).sum())
    difference = ci = p_fixed = p_seq = None
    if n:
        difference = (wins - losses) / n
        p_fixed = mcnemar_exact_p(wins, losses)
        p_seq = float(
            sequential_p_paired(
                np.cumsum(ours & ~theirs),
                np.cumsum(theirs & ~ours),
                np.arange(1, n + 1),
                options.mde,
            )[-1]
        )
        if wins + losses:
            low, high = proportion_confint(wins, wins + losses, alpha=0.05, method="beta")
            share = (wins + losses) / n
            ci = (float(share * (2 * low - 1)), float(share * (2 * high - 1)))
    needed = required_pairs(
        (wins + losses) / n if n else 0.0,
        options.mde,
        alpha=alpha,
        power=options.power,
        sequential=options.method == "sequential",
    )
    decision = _decide(
        name,
        options,
        alpha,
        difference=difference,
        p_sequential=p_seq,
        p_fixed=p_fixed,
        have=n,
        needed=needed,
        more=max(0, needed - n),
        version=_latest_version(log, name),
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
        p_sequential=p_seq,
        discordant=(wins, losses),
        decision=decision,
    )


def _compare_independent(
    log: ExperimentLog, name: str, options: Options, alpha: float
) -> Comparison:
    served = ~log.shadow & log.labelled
    ours = served & (log.variant == name)
    theirs = served & (log.variant == options.baseline)
    either = ours | theirs
    arm = ours[either]  # in time order: True where the label is the variant's
    right = log.correct[either]
    c1, n1 = np.cumsum(right & ~arm), np.cumsum(~arm)
    c2, n2 = np.cumsum(right & arm), np.cumsum(arm)
    k1, m1 = (int(c1[-1]), int(n1[-1])) if len(arm) else (0, 0)
    k2, m2 = (int(c2[-1]), int(n2[-1])) if len(arm) else (0, 0)
    difference = ci = p_fixed = p_seq = None
    if m1 and m2:
        difference = k2 / m2 - k1 / m1
        low, high = confint_proportions_2indep(
            k2, m2, k1, m1, method="newcomb", compare="diff", alpha=0.05
        )
        ci = (float(low), float(high))
        p_fixed = float(fixed_p_independent(k2, m2, k1, m1))
        p_seq = float(sequential_p_independent(c1, n1, c2, n2, options.mde)[-1])
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
    decision = _decide(
        name,
        options,
        alpha,
        difference=difference,
        p_sequential=p_seq,
        p_fixed=p_fixed,
        have=m1 + m2,
        needed=need1 + need2,
        more=max(0, need1 - m1) + max(0, need2 - m2),
        version=_latest_version(log, name),
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


def _decide(
    name: str,
    options: Options,
    alpha: float,
    *,
    difference: float | None,
    p_sequential: float | None,
    p_fixed: float | None,
    have: int,
    needed: int,
    more: int,
    version: int,
) -> Decision:
    """Promote, keep or continue: `have` labelled predictions, `needed` for the power at the
    MDE, `more` still missing; `version` is the variant's latest."""
    p = p_sequential if options.method == "sequential" else p_fixed
    test = "sequential p" if options.method == "sequential" else "fixed-horizon p"
    if p is not None and difference is not None and p <= alpha:
        if difference > 0:
            return Decision(
                "promote",
                f"{name} (version {version}) is more accurate than {options.baseline} by "
                f"{difference:.4f} ({test} {p:.2g} <= {alpha:.3g})",
                command=f"sentiment models promote {version} --alias {CHAMPION}",
            )
        return Decision(
            "keep",
            f"{name} is less accurate than {options.baseline} by {-difference:.4f} "
            f"({test} {p:.2g} <= {alpha:.3g}); keep {options.baseline}",
        )
    if more > 0:
        return Decision(
            "continue",
            f"about {more:,} more labelled predictions needed to detect a difference of "
            f"{options.mde:g} in accuracy between {name} and {options.baseline} "
            f"({options.power:.0%} power, {options.method} test)",
            more_labelled_needed=more,
        )
    return Decision(
        "keep",
        f"no difference of {options.mde:g} or more between {name} and {options.baseline} after "
        f"{have:,} labelled predictions ({needed:,} give {options.power:.0%} power to see one); "
        f"keep {options.baseline}",
        more_labelled_needed=0,
    )


def _overall(comparisons: list[Comparison], baseline: str) -> Decision:
    """One line for the whole experiment: promote the best significantly better variant, else
    continue while any comparison needs more labels, else keep the baseline."""
    better = [c for c in comparisons if c.decision.action == "promote"]
    if better:
        return max(better, key=lambda c: c.difference or 0.0).decision
    waiting = [c for c in comparisons if c.decision.action == "continue"]
    if waiting:
        return max(waiting, key=lambda c: c.decision.more_labelled_needed or 0).decision
    if comparisons:
        return (
            comparisons[0].decision
            if len(comparisons) == 1
            else Decision("keep", f"no variant beats {baseline}; keep {baseline}")
        )
    return Decision("keep", f"only {baseline} in this experiment: nothing to compare")
