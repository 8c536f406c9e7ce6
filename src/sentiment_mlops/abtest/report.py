"""Printing a `Report` for a person: the variants as a table, each comparison, and the
recommendation with the command that acts on it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sentiment_mlops.abtest.analysis import Report
from sentiment_mlops.abtest.decision import signed
from sentiment_mlops.abtest.log import describe_moment

if TYPE_CHECKING:
    from rich.console import Console


def print_report(report: Report, console: Console) -> None:
    """The report as a header, a table of variants, one block per comparison, and the
    recommendation."""
    from rich import box
    from rich.table import Table

    chosen = " (the most recent in the log)" if report.experiment_most_recent else ""
    window = "" if report.since is None else f", predictions since {describe_moment(report.since)}"
    console.print(f"Experiment [bold]{report.experiment}[/]{chosen}{window}", highlight=False)
    if report.versions_since is not None:
        console.print(
            f"A variant changed model version: the experiment restarts at "
            f"{describe_moment(report.versions_since)}, and the {report.left_out:,} predictions "
            "before it are left out (--across-versions reads them too)",
            highlight=False,
            soft_wrap=True,
        )
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
        if report.options.method == "sequential" and c.crossed_at_labelled is not None:
            console.print(
                f"  crossed alpha at {c.crossed_at_labelled:,} labels (in the order they "
                f"arrived), difference then {signed(c.difference_at_crossing or 0.0)}",
                highlight=False,
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
