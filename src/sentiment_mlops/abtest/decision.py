"""From a comparison's numbers to what to do: promote the variant, keep the baseline, or
continue collecting labels; and one recommendation for the whole experiment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sentiment_mlops.config import CHAMPION

Action = Literal["promote", "keep", "continue"]
Method = Literal["sequential", "fixed"]

# Beyond this ratio of labels per arm (either way), "more labelled predictions needed" is
# also given per variant: the smaller arm sets the pace, and the total is mostly the other's.
UNEVEN_SPLIT = 4.0


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    more_labelled_needed: int | None = None
    command: str | None = None  # what to run to act on it
    # While continuing: the labels still needed per variant (an uneven split needs far more
    # of the larger arm's, which arrive at the same pace as the smaller one's).
    more_labelled_needed_by_variant: dict[str, int] | None = None


@dataclass(frozen=True)
class Evidence:
    """What one comparison found. `difference` is the variant's accuracy minus the baseline's
    on all labels so far; `difference_at_crossing` is the difference when the p-value behind
    the decision first reached alpha (the sequential test's direction; for the fixed-horizon
    test, its one look is now), None while it has not."""

    variant: str
    baseline: str
    version: int  # the variant's latest model version
    method: Method
    mde: float
    power: float
    alpha: float
    p: float | None
    difference: float | None
    difference_at_crossing: float | None
    have: int  # labelled predictions (paired: requests)
    needed: int  # for the power at the MDE
    more: dict[str, int]  # still missing, per variant (the baseline's too, when independent)


def decide(e: Evidence) -> Decision:
    """Promote only when the test crossed in the variant's favour and the difference still
    favours it; keep when it crossed against the variant (or the sign flipped since: the
    models' relative accuracy is not stable, and a promotion would rest on evidence for the
    other direction); otherwise continue while labels are missing, else keep."""
    test = "sequential p" if e.method == "sequential" else "fixed-horizon p"
    crossed = e.p is not None and e.p <= e.alpha and e.difference_at_crossing is not None
    if crossed and e.difference is not None and e.difference_at_crossing is not None:
        at = f"{test} {e.p:.2g} <= {e.alpha:.3g}"
        if e.difference_at_crossing > 0 and e.difference > 0:
            return Decision(
                "promote",
                f"{e.variant} (version {e.version}) is more accurate than {e.baseline} by "
                f"{points(e.difference)} ({at})",
                command=f"sentiment models promote {e.version} --alias {CHAMPION}",
            )
        if e.difference_at_crossing > 0:
            return Decision(
                "keep",
                f"the test crossed with {e.variant} ahead by {points(e.difference_at_crossing)} "
                f"({at}), but the difference is now {signed(e.difference)}: the two models' "
                f"relative accuracy changed during the experiment; keep {e.baseline}",
            )
        turned = (
            f"; the difference has since turned to {signed(e.difference)}, which this "
            "evidence does not support"
            if e.difference > 0
            else ""
        )
        return Decision(
            "keep",
            f"{e.variant} is less accurate than {e.baseline} by "
            f"{points(e.difference_at_crossing)} ({at}){turned}; keep {e.baseline}",
        )
    missing = sum(e.more.values())
    if missing > 0:
        return Decision(
            "continue",
            f"about {missing:,} more labelled predictions{_per_variant(e.more)} needed to "
            f"detect a difference of {e.mde:g} in accuracy between {e.variant} and "
            f"{e.baseline} ({e.power:.0%} power, {e.method} test)",
            more_labelled_needed=missing,
            more_labelled_needed_by_variant=dict(e.more),
        )
    return Decision(
        "keep",
        f"no difference of {e.mde:g} or more between {e.variant} and {e.baseline} after "
        f"{e.have:,} labelled predictions ({e.needed:,} give {e.power:.0%} power to see one); "
        f"keep {e.baseline}",
        more_labelled_needed=0,
    )


def _per_variant(more: dict[str, int]) -> str:
    if len(more) < 2 or min(more.values()) == 0:
        return ""
    small, large = sorted(more.values())
    if large < UNEVEN_SPLIT * small:
        return ""
    parts = ", ".join(f"{count:,} of {name}" for name, count in more.items())
    return f" ({parts}, at this traffic split)"


def overall(decisions: list[tuple[float | None, Decision]], baseline: str) -> Decision:
    """One line for the whole experiment from each comparison's (difference, decision):
    promote the variant with the largest significant improvement, else continue while any
    comparison needs more labels, else keep the baseline."""
    better = [(d or 0.0, x) for d, x in decisions if x.action == "promote"]
    if better:
        return max(better, key=lambda pair: pair[0])[1]
    waiting = [x for _, x in decisions if x.action == "continue"]
    if waiting:
        return max(waiting, key=lambda x: x.more_labelled_needed or 0)
    if len(decisions) == 1:
        return decisions[0][1]
    if decisions:
        return Decision("keep", f"no variant beats {baseline}; keep {baseline}")
    return Decision("keep", f"only {baseline} in this experiment: nothing to compare")


def points(value: float) -> str:
    """An accuracy difference's size, never "-0.0000"."""
    return f"{abs(round(value, 4)):.4f}"


def signed(value: float) -> str:
    """A signed accuracy difference, "+0.0000" rather than "-0.0000"."""
    return f"{round(value, 4) + 0.0:+.4f}"
