"""A/B analysis over the prediction log: is a variant better than the baseline (`champion`)?

Reads one experiment from the `predictions` and `feedback` tables (serving/predictions.py)
and reports, per variant: traffic, feedback coverage, accuracy with its Wilson 95% interval,
p50/p99 scoring latency; then, for each other variant against the baseline, the difference in
accuracy with its 95% interval, a test of it, and a recommendation (promote, keep, or how many
more labelled predictions are needed to see the minimum detectable effect).

Two designs, chosen per variant from how it got its traffic:

- **Paired**: the variant scored the baseline's requests in shadow (`shadow_of` = the primary
  prediction, whose feedback judges both). On the labelled requests: McNemar's exact test,
  and the difference's interval from the Clopper-Pearson interval of the discordant pairs
  (conditional on their number: the interval that agrees with the exact test). Only the
  requests on which the two models disagree carry information, so far fewer labels are needed.
- **Independent**: the variants split the traffic. Newcombe's interval of the difference and
  the pooled two-proportion z-test.

Both are fixed-horizon tests: valid when the sample size was fixed in advance and the result
is read once. Operators read this report every day, and a fixed-horizon p-value checked at 20
looks is below 0.05 in about a quarter of A/A experiments. The recommendation therefore uses,
by default, the mixture sequential probability ratio test (mSPRT), whose always-valid p-value
may be read after every new label (`msprt_p_values`).

The statistics come from statsmodels and scipy; the mSPRT, which neither offers, is the closed
form of the paper it cites, on numpy, and its error rate is checked by simulation in the tests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import norm
from sqlalchemy import and_, create_engine, func, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
    test_proportions_2indep,
)

from sentiment_mlops.config import CHAMPION, DEFAULT_MDE
from sentiment_mlops.serving.predictions import feedback, predictions

if TYPE_CHECKING:
    from rich.console import Console

Method = Literal["sequential", "fixed"]
Action = Literal["promote", "keep", "continue"]
Design = Literal["paired", "independent"]

ALPHA = 0.05
POWER = 0.8
# How long the PostgreSQL driver may take to connect before the report says it cannot.
CONNECT_TIMEOUT_SECONDS = 10

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class AbTestError(ValueError):
    """The report cannot be made as asked; the message says why and what to do."""


class PredictionLogUnavailable(AbTestError):
    """The prediction log cannot be read: unreachable, missing, or without its tables."""


# -- Statistics --------------------------------------------------------------------------------


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
    size is mde / sqrt(discordance), for a one-sample `NormalIndPower` (ratio 0).
    """
    sigma2 = max(discordance, mde)
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


# -- Reading the log ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentLog:
    """One experiment's predictions, in time order, as arrays (one element per prediction).

    A shadow row's `labelled`/`correct` judge it against the feedback on its primary
    prediction, whose variant and correctness are `primary_variant`/`primary_correct` (empty
    and False for served rows).
    """

    experiment: str
    most_recent: bool  # chosen as the experiment with the latest prediction
    since: datetime | None
    variant: npt.NDArray[np.str_]
    model_version: npt.NDArray[np.int64]
    latency_ms: FloatArray
    shadow: BoolArray
    labelled: BoolArray
    correct: BoolArray
    primary_variant: npt.NDArray[np.str_]
    primary_correct: BoolArray


def read_log(
    url: str, experiment: str | None = None, since: datetime | None = None
) -> ExperimentLog:
    """Read one experiment (default: the one with the latest prediction) from the log at `url`,
    predictions made at or after `since` only.

    AbTestError when there is nothing to read; PredictionLogUnavailable when the database
    cannot be reached or lacks the tables.
    """
    engine = _engine(url)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            name = experiment if experiment is not None else _most_recent(conn, since)
            rows = conn.execute(_rows_query(name, since)).all()
            if not rows:
                raise AbTestError(_nothing_message(conn, name, since))
    except SQLAlchemyError as exc:
        raise PredictionLogUnavailable(
            f"cannot read the prediction log at {shown}: {_reason(exc)}"
        ) from exc
    finally:
        engine.dispose()
    variant, version, label, latency, shadow_of, primary_variant, primary_label, truth = zip(
        *rows, strict=True
    )
    labelled = np.array([t is not None for t in truth], dtype=bool)
    return ExperimentLog(
        experiment=name,
        most_recent=experiment is None,
        since=since,
        variant=np.array(variant, dtype=np.str_),
        model_version=np.array(version, dtype=np.int64),
        latency_ms=np.array(latency, dtype=np.float64),
        shadow=np.array([s is not None for s in shadow_of], dtype=bool),
        labelled=labelled,
        correct=labelled & np.array([a == t for a, t in zip(label, truth, strict=True)]),
        primary_variant=np.array([v or "" for v in primary_variant], dtype=np.str_),
        primary_correct=labelled
        & np.array([a == t for a, t in zip(primary_label, truth, strict=True)]),
    )


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if path and path != ":memory:" and not path.startswith("file:") and not Path(path).exists():
            raise PredictionLogUnavailable(
                f"no prediction log at {path}: nothing has been logged there yet "
                "(the server writes it; SENTIMENT_DATABASE_URL chooses another database)"
            )
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in (
        "psycopg2",
        "psycopg",
    ):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    return create_engine(parsed, connect_args=connect_args)


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's first line (e.g. `no such table: predictions`), not SQLAlchemy's wrapper
    with the statement and a link."""
    text = str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
    return (text.strip().splitlines() or [type(exc).__name__])[0]


def _most_recent(conn: Connection, since: datetime | None) -> str:
    query = (
        select(predictions.c.experiment)
        .where(*([] if since is None else [predictions.c.created_at >= since]))
        .order_by(predictions.c.created_at.desc())
        .limit(1)
    )
    name = conn.execute(query).scalar()
    if name is None:
        raise AbTestError(
            "the prediction log has no predictions"
            + ("" if since is None else f" since {_when(since)}")
        )
    return str(name)


def _rows_query(experiment: str, since: datetime | None) -> Any:
    """Every prediction of the experiment in time order, with (for a shadow one) the variant
    and label of the prediction it shadows, and the feedback on the request."""
    logged = predictions.alias("logged")
    shadowed = predictions.alias("shadowed")
    return (
        select(
            logged.c.variant,
            logged.c.model_version,
            logged.c.label,
            logged.c.latency_ms,
            logged.c.shadow_of,
            shadowed.c.variant,
            shadowed.c.label,
            feedback.c.label,
        )
        .select_from(
            logged.outerjoin(shadowed, shadowed.c.id == logged.c.shadow_of).outerjoin(
                feedback,
                feedback.c.prediction_id == func.coalesce(logged.c.shadow_of, logged.c.id),
            )
        )
        .where(
            and_(
                logged.c.experiment == experiment,
                *([] if since is None else [logged.c.created_at >= since]),
            )
        )
        .order_by(logged.c.created_at, logged.c.id)
    )


def _nothing_message(conn: Connection, experiment: str, since: datetime | None) -> str:
    latest = func.max(predictions.c.created_at)
    known = conn.execute(
        select(predictions.c.experiment)
        .group_by(predictions.c.experiment)
        .order_by(latest.desc())
        .limit(10)
    ).scalars()
    names = ", ".join(repr(n) for n in known) or "none"
    window = "" if since is None else f" since {_when(since)}"
    return (
        f"no predictions for experiment {experiment!r}{window} "
        f"(experiments in the log, most recent first: {names})"
    )


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: an ISO 8601 date or date-time (UTC unless it has an offset), or a duration
    back from now: `30m`, `24h`, `7d`, `2w`. ValueError for anything else."""
    if match := _DURATION.match(text):
        amount, unit = match.groups()
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO date/time (2026-11-01, 2026-11-01T09:30, "
            "2026-11-01T09:30+01:00) nor a duration (30m, 24h, 7d, 2w)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# -- The analysis ------------------------------------------------------------------------------


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
        table = [[both, losses], [wins, n - both - wins - losses]]
        p_fixed = float(mcnemar(table, exact=True).pvalue)
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


# -- Printing ----------------------------------------------------------------------------------


def print_report(report: Report, console: Console) -> None:
    """The report as a header, a table of variants, one block per comparison, and the
    recommendation."""
    from rich import box
    from rich.table import Table

    chosen = " (the most recent in the log)" if report.experiment_most_recent else ""
    window = "" if report.since is None else f", predictions since {_when(report.since)}"
    console.print(f"Experiment [bold]{report.experiment}[/]{chosen}{window}", highlight=False)
    table = Table(box=box.SIMPLE_HEAD)
    headers = (
        "variant",
        "version",
        "served (share)",
        "shadow",
        "labelled",
        "coverage",
        "accuracy",
        "95% CI",
        "p50 ms",
        "p99 ms",
    )
    for name in headers:
        table.add_column(
            name, justify="left" if name in ("variant", "95% CI") else "right", no_wrap=True
        )
    for v in report.variants:
        table.add_row(
            v.variant + ("*" if v.variant == report.options.baseline else ""),
            ", ".join(map(str, v.model_versions)),
            f"{v.served:,} ({v.served_share:.0%})",
            f"{v.shadow:,}",
            f"{v.labelled:,}",
            f"{v.coverage:.1%}",
            _number(v.accuracy),
            _interval(v.accuracy_ci),
            f"{v.latency_p50_ms:.2f}",
            f"{v.latency_p99_ms:.2f}",
        )
    console.print(table)
    console.print(
        "* baseline. Accuracy with Wilson 95% intervals; coverage: share with feedback.",
        highlight=False,
    )
    for c in report.comparisons:
        console.print(
            f"[bold]{c.variant} vs {c.baseline}[/], {c.design}: {c.labelled:,} labelled "
            + ("requests scored by both" if c.design == "paired" else "predictions"),
            highlight=False,
        )
        if c.discordant is not None:
            console.print(
                f"  only {c.variant} right: {c.discordant[0]:,}; "
                f"only {c.baseline} right: {c.discordant[1]:,}",
                highlight=False,
            )
        if c.difference is not None:
            console.print(
                f"  accuracy {_number(c.variant_accuracy)} vs {_number(c.baseline_accuracy)}: "
                f"difference {c.difference:+.4f}, 95% CI {_interval(c.difference_ci, signed=True)}",
                highlight=False,
            )
        console.print(f"  {c.test}: p = {_p(c.p_fixed)} (fixed horizon: one look)", highlight=False)
        console.print(
            f"  mSPRT: p = {_p(c.p_sequential)} (sequential: valid at every look)", highlight=False
        )
        if len(report.comparisons) > 1:
            console.print(f"  → {c.decision.action}: {c.decision.reason}", highlight=False)
    rec = report.recommendation
    method = "mSPRT" if report.options.method == "sequential" else "fixed-horizon test"
    console.print(
        f"[bold]Recommendation ({method}, MDE {report.options.mde:g}): {rec.action}[/]: "
        f"{rec.reason}",
        highlight=False,
        soft_wrap=True,
    )
    if rec.command:
        console.print(f"  run: {rec.command}", highlight=False, soft_wrap=True)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _interval(ci: tuple[float, float] | None, signed: bool = False) -> str:
    if ci is None:
        return "-"
    form = "+.4f" if signed else ".4f"
    return f"[{ci[0]:{form}}, {ci[1]:{form}}]"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
