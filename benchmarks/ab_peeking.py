"""Why the A/B report's recommendation uses a sequential test: simulated A/A experiments.

Two equally accurate variants (0.80), 5,000 labelled predictions each, read at 1 to 100
evenly spaced looks, stopping at the first p <= 0.05. Prints the share of experiments that
declared a difference (false positives) for the mSPRT the report uses by default and for the
fixed-horizon z-test read at every look; then, at an MDE of 0.02, the labels per arm each
test needs for 80% power (`sentiment ab report`'s "more labelled predictions needed") and the
mSPRT's simulated power at both sizes. Writes benchmarks/results/ab_peeking.json.

    python benchmarks/ab_peeking.py [--experiments 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from sentiment_mlops.abtest.statistics import (
    fixed_p_independent,
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
        rows.append(
            {
                "design": f"paired ({DISCORDANCE:.0%} disagree)",
                "sized_for": "mSPRT" if sequential else "fixed horizon",
                "labels": pairs,
                "msprt_power": float((p[:, -1] <= ALPHA).mean()),
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
    for name in ("design", "sized for", "labels", "mSPRT power"):
        table.add_column(name, justify="left" if name == "design" else "right")
    for row in sizes:
        table.add_row(
            str(row["design"]),
            str(row["sized_for"]),
            f"{row['labels']:,}",
            f"{row['msprt_power']:.3f}",
        )
    console.print(table)

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
            },
            indent=2,
        )
    )
    console.print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
