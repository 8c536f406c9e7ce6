"""Why the A/B report decides as it does: simulated experiments, one table per claim.

1. A/A false positives: two equally accurate variants (0.80), 5,000 labelled predictions
   each, read at 1 to 100 evenly spaced looks, stopping at the first p <= 0.05: the mSPRT the
   report uses by default against the fixed-horizon z-test read at every look.
2. Sample sizes: at an MDE of 0.02, the labels each test needs for 80% power ("more labelled
   predictions needed") and the power they give (the mSPRT simulated at 20 looks; McNemar's
   exact test simulated at one).
3. Direction: a challenger that loses early and wins a little late (paired), and stationary
   better and worse ones: how often each rule promotes. The old rule took the sign of the
   difference at the read; the report's takes the sign when the test crossed.
4. Paired interval coverage (500 pairs, 10% disagreement, whoever wins the disagreements):
   the old Clopper-Pearson share of wins scaled by the disagreement rate, and Newcombe's
   method 10 the report uses.
5. Late labels: A/A experiments of 10,000 requests read every 500 while labels arrive after an
   exponential delay: how often a difference is declared, and how often the p-value rose
   between two reads, with labels in prediction order (old) and in arrival order (the report).

Writes benchmarks/results/ab_peeking.json.

    python benchmarks/ab_peeking.py [--experiments 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from sentiment_mlops.abtest.statistics import (
    first_crossing,
    fixed_p_independent,
    paired_difference_ci,
    required_independent,
    required_pairs,
    sequential_p_independent,
    sequential_p_paired,
)

ROOT = Path(__file__).resolve().parents[1]
ALPHA = 0.05
ACCURACY = 0.80
LABELS = 5_000
LOOKS = (1, 2, 5, 10, 20, 50, 100)
MDE = 0.02
DISCORDANCE = 0.10  # paired: the share of requests on which the two models disagree


def looks_at(rng: np.random.Generator, experiments: int, looks: int, nobs: int, p: float) -> tuple:
    """Cumulative correct counts of one arm at `looks` evenly spaced looks up to `nobs`."""
    batch = np.diff(np.linspace(0, nobs, looks + 1).round().astype(int))
    counts = rng.binomial(np.broadcast_to(batch, (experiments, looks)), p).cumsum(axis=1)
    return counts, batch.cumsum()


def false_positives(experiments: int, rng: np.random.Generator) -> list[dict[str, float]]:
    rows = []
    for looks in LOOKS:
        first, nobs = looks_at(rng, experiments, looks, LABELS, ACCURACY)
        second, _ = looks_at(rng, experiments, looks, LABELS, ACCURACY)
        sequential = sequential_p_independent(first, nobs, second, nobs, tau=MDE)
        naive = fixed_p_independent(first, nobs, second, nobs)
        rows.append(
            {
                "looks": looks,
                "msprt": float((sequential.min(axis=1) <= ALPHA).mean()),
                "fixed_horizon": float((naive.min(axis=1) <= ALPHA).mean()),
            }
        )
    return rows


def sample_sizes(experiments: int, rng: np.random.Generator) -> list[dict[str, object]]:
    """Labels each test asks for at the MDE, and the mSPRT's power there (20 looks)."""
    rows: list[dict[str, object]] = []
    for sequential in (False, True):
        per_arm, _ = required_independent(ACCURACY, MDE, 1.0, sequential=sequential)
        first, nobs = looks_at(rng, experiments, 20, per_arm, ACCURACY)
        second, _ = looks_at(rng, experiments, 20, per_arm, ACCURACY - MDE)
        p = sequential_p_independent(first, nobs, second, nobs, tau=MDE)
        rows.append(
            {
                "design": "independent",
                "sized_for": "mSPRT" if sequential else "fixed horizon",
                "labels": 2 * per_arm,
                "msprt_power": float((p[:, -1] <= ALPHA).mean()),
            }
        )
    for sequential in (False, True):
        pairs = required_pairs(DISCORDANCE, MDE, sequential=sequential)
        outcome = rng.random((experiments, pairs))
        wins = outcome < (DISCORDANCE + MDE) / 2
        losses = (outcome >= (DISCORDANCE + MDE) / 2) & (outcome < DISCORDANCE)
        looks = np.linspace(0, pairs, 21).round().astype(int)[1:] - 1
        p = sequential_p_paired(
            wins.cumsum(axis=1)[:, looks], losses.cumsum(axis=1)[:, looks], looks + 1, tau=MDE
        )
        exact = [
            mcnemar([[0, lo], [w, 0]], exact=True).pvalue <= ALPHA
            for w, lo in zip(wins.sum(axis=1).tolist(), losses.sum(axis=1).tolist(), strict=True)
        ]
        rows.append(
            {
                "design": f"paired ({DISCORDANCE:.0%} disagree)",
                "sized_for": "mSPRT" if sequential else "fixed horizon (exact McNemar)",
                "labels": pairs,
                "msprt_power": float((p[:, -1] <= ALPHA).mean()),
                "mcnemar_power": float(np.mean(exact)),
            }
        )
    return rows


# (name, [(pairs, share the challenger wins, share it loses), ...] in time order)
DIRECTION_SCENARIOS = (
    ("loses early, wins a little late", [(300, 0.01, 0.10), (700, 0.06, 0.04)]),
    ("better throughout (+0.02)", [(4000, 0.06, 0.04)]),
    ("worse throughout (-0.02)", [(4000, 0.04, 0.06)]),
    ("equal throughout", [(4000, 0.05, 0.05)]),
)


def direction(experiments: int, rng: np.random.Generator) -> list[dict[str, object]]:
    """Share of paired experiments each rule promotes, reading once at the end."""
    rows: list[dict[str, object]] = []
    for name, phases in DIRECTION_SCENARIOS:
        parts = []
        for pairs, win, lose in phases:
            u = rng.random((experiments, pairs))
            parts.append(np.where(u < win, 1, np.where(u < win + lose, -1, 0)))
        d = np.concatenate(parts, axis=1)
        n = np.arange(1, d.shape[1] + 1)
        won, lost = (d == 1).cumsum(axis=1), (d == -1).cumsum(axis=1)
        p = sequential_p_paired(won, lost, n, tau=MDE)
        now = won[:, -1] - lost[:, -1]
        old = (p[:, -1] <= ALPHA) & (now > 0)
        new = np.zeros(experiments, dtype=bool)
        for i in range(experiments):
            at = first_crossing(p[i], ALPHA)
            new[i] = at is not None and won[i, at] > lost[i, at] and now[i] > 0
        rows.append(
            {
                "scenario": name,
                "pairs": int(d.shape[1]),
                "old_promotes": float(old.mean()),
                "report_promotes": float(new.mean()),
            }
        )
    return rows


def coverage(experiments: int, rng: np.random.Generator) -> list[dict[str, object]]:
    """Share of 95% intervals covering the true paired difference, old and new."""
    rows: list[dict[str, object]] = []
    for name, win, lose in (
        ("both win equally often", 0.05, 0.05),
        ("one wins most disagreements", 0.09, 0.01),
        ("one never wins", 0.10, 0.0),
    ):
        tables = rng.multinomial(500, [0.75, win, lose, 0.15], experiments)
        truth = win - lose
        old, new = [], []
        for both, wins, losses, neither in tables.tolist():
            discordant = wins + losses
            if discordant:
                low, high = proportion_confint(wins, discordant, alpha=0.05, method="beta")
                share = discordant / 500
                old.append(share * (2 * low - 1) <= truth <= share * (2 * high - 1))
            else:
                old.append(truth == 0)
            low, high = paired_difference_ci(both, wins, losses, neither)
            new.append(low <= truth <= high)
        rows.append(
            {
                "scenario": name,
                "old_coverage": float(np.mean(old)),
                "report_coverage": float(np.mean(new)),
            }
        )
    return rows


def late_labels(experiments: int, rng: np.random.Generator) -> list[dict[str, object]]:
    """A/A, 10,000 requests at 0.80, read every 500, labels late by Exp(delay) requests."""
    n, reads = 10_000, range(500, 10_001, 500)
    rows: list[dict[str, object]] = []
    for delay in (0, 500, 2000, 10_000):
        found = {"prediction": 0, "arrival": 0}
        rose = {"prediction": 0, "arrival": 0}
        for _ in range(experiments):
            arm = rng.random(n) < 0.5
            right = rng.random(n) < ACCURACY
            arrival = np.arange(n) + (rng.exponential(delay, n) if delay else 0.0)
            orders = {
                "prediction": np.arange(n),
                "arrival": np.argsort(arrival, kind="stable"),
            }
            for key, order in orders.items():
                seen_p = []
                for read in reads:
                    seen = order[arrival[order] <= read]
                    a, r = arm[seen], right[seen]
                    p = sequential_p_independent(
                        np.cumsum(r & ~a), np.cumsum(~a), np.cumsum(r & a), np.cumsum(a), MDE
                    )
                    seen_p.append(float(p[-1]) if len(p) else 1.0)
                found[key] += min(seen_p) <= ALPHA
                rose[key] += any(b > a + 1e-12 for a, b in itertools.pairwise(seen_p))
        rows.append(
            {
                "mean_delay_requests": delay,
                "prediction_order_false_positives": found["prediction"] / experiments,
                "arrival_order_false_positives": found["arrival"] / experiments,
                "prediction_order_p_rose": rose["prediction"] / experiments,
                "arrival_order_p_rose": rose["arrival"] / experiments,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    console = Console()

    rates = false_positives(args.experiments, rng)
    table = Table(title=f"A/A false positives ({args.experiments:,} experiments)")
    for name in ("looks", "mSPRT (default)", "fixed-horizon z-test"):
        table.add_column(name, justify="right")
    for row in rates:
        table.add_row(str(row["looks"]), f"{row['msprt']:.3f}", f"{row['fixed_horizon']:.3f}")
    console.print(table)

    sizes = sample_sizes(args.experiments, rng)
    table = Table(title=f"Labels for 80% power at a difference of {MDE}")
    for name in ("design", "sized for", "labels", "mSPRT power", "exact McNemar power"):
        table.add_column(name, justify="left" if name == "design" else "right")
    for row in sizes:
        table.add_row(
            str(row["design"]),
            str(row["sized_for"]),
            f"{row['labels']:,}",
            f"{row['msprt_power']:.3f}",
            f"{row['mcnemar_power']:.3f}" if "mcnemar_power" in row else "-",
        )
    console.print(table)

    flips = direction(args.experiments, rng)
    _print(console, "Promoted (paired, read once at the end)", flips)
    covered = coverage(args.experiments * 5, rng)
    _print(console, f"Paired 95% interval coverage ({args.experiments * 5:,} runs)", covered)
    late = late_labels(args.experiments // 4, rng)
    _print(console, f"A/A with late labels ({args.experiments // 4:,} experiments)", late)

    out = ROOT / "benchmarks" / "results" / "ab_peeking.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "experiments": args.experiments,
                "seed": args.seed,
                "python": platform.python_version(),
                "false_positives": rates,
                "sample_sizes": sizes,
                "direction": flips,
                "paired_coverage": covered,
                "late_labels": late,
            },
            indent=2,
        )
    )
    console.print(f"wrote {out.relative_to(ROOT)}")


def _print(console: Console, title: str, rows: list[dict[str, object]]) -> None:
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key.replace("_", " "), justify="right")
    for row in rows:
        table.add_row(
            *(
                f"{v:.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
                for v in row.values()
            )
        )
    console.print(table)


if __name__ == "__main__":
    main()
