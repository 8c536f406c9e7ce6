"""`sentiment ab report` over a prediction log in SQLite (SENTIMENT_DATABASE_URL)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentiment_mlops.cli import app
from tests.ab_logs import START, LogBuilder, new_log

runner = CliRunner()


@pytest.fixture
def log_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None) -> str:
    url = new_log(tmp_path)
    monkeypatch.setenv("SENTIMENT_DATABASE_URL", url)
    return url


@pytest.fixture
def experiment(log_url: str) -> str:
    LogBuilder("homepage").served("champion", 3, right=800, wrong=200, unlabelled=100).served(
        "challenger", 4, right=900, wrong=100, unlabelled=100
    ).write(log_url, seed=7)
    return log_url


def test_json_report_has_the_variants_and_the_recommendation(experiment: str) -> None:
    result = runner.invoke(app, ["ab", "report", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["experiment"] == "homepage" and report["experiment_most_recent"] is True
    variants = {v["variant"]: v for v in report["variants"]}
    assert variants["champion"]["accuracy"] == 0.8
    assert variants["challenger"]["accuracy"] == 0.9
    assert variants["challenger"]["served"] == 1100 and variants["challenger"]["labelled"] == 1000
    assert set(variants["champion"]) >= {
        "coverage",
        "accuracy_ci",
        "latency_p50_ms",
        "latency_p99_ms",
        "served_share",
    }
    (comparison,) = report["comparisons"]
    assert comparison["design"] == "independent"
    assert comparison["difference"] == pytest.approx(0.1)
    assert comparison["p_fixed"] < comparison["p_sequential"] < 0.05
    assert report["recommendation"] == {
        "action": "promote",
        "reason": comparison["decision"]["reason"],
        "more_labelled_needed": None,
        "more_labelled_needed_by_variant": None,
        "command": "sentiment models promote 4 --alias champion",
    }
    assert report["options"] == {
        "baseline": "champion",
        "mde": 0.02,
        "method": "sequential",
        "alpha": 0.05,
        "power": 0.8,
        "across_versions": False,
    }
    assert (report["versions_since"], report["left_out"]) == (None, 0)
    assert comparison["crossed_at_labelled"] <= 2000 and comparison["difference_at_crossing"] > 0


def test_a_version_change_restarts_the_experiment_unless_across_versions(log_url: str) -> None:
    LogBuilder().served("champion", 3, right=300, wrong=700).served(
        "challenger", 4, right=0, wrong=500
    ).write(log_url, shuffle=False)  # version 4's predictions are the last of the first day
    LogBuilder().served("champion", 3, right=300, wrong=700).served(
        "challenger", 5, right=500, wrong=0
    ).write(log_url, start=START + timedelta(days=1))
    result = runner.invoke(app, ["ab", "report"])
    assert result.exit_code == 0, result.output
    assert "A variant changed model version: the experiment restarts at 2026-11-03 00:00:00" in (
        result.stdout
    )
    assert "the 1,500 predictions before it are left out" in result.stdout
    assert "run: sentiment models promote 5 --alias champion" in result.stdout
    across = runner.invoke(app, ["ab", "report", "--across-versions", "--json"])
    assert across.exit_code == 0, across.output
    assert json.loads(across.stdout)["left_out"] == 0


def test_table_report_says_what_it_read_and_what_to_do(experiment: str) -> None:
    result = runner.invoke(app, ["ab", "report", "--since", "2026-11-01", "--method", "fixed"])
    assert result.exit_code == 0, result.output
    assert "Experiment homepage (the most recent in the log), predictions since 2026-11-01" in (
        result.stdout
    )
    assert "Recommendation (fixed-horizon test, MDE 0.02): promote" in result.stdout
    assert "run: sentiment models promote 4 --alias champion" in result.stdout


def test_not_enough_labels_says_how_many_more(log_url: str) -> None:
    LogBuilder().served("champion", 3, right=80, wrong=20).served(
        "challenger", 4, right=82, wrong=18
    ).write(log_url)
    result = runner.invoke(app, ["ab", "report", "--json", "--mde", "0.05"])
    assert result.exit_code == 0, result.output
    recommendation = json.loads(result.stdout)["recommendation"]
    assert recommendation["action"] == "continue"
    assert recommendation["more_labelled_needed"] > 1000
    assert "more labelled predictions needed" in recommendation["reason"]


def test_no_rows_is_a_message_and_exit_1(log_url: str) -> None:
    result = runner.invoke(app, ["ab", "report"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: the prediction log has no predictions"


def test_unknown_experiment_is_a_message_and_exit_1(experiment: str) -> None:
    result = runner.invoke(app, ["ab", "report", "--experiment", "checkout"])
    assert result.exit_code == 1
    assert "no predictions for experiment 'checkout'" in result.stderr
    assert "'homepage'" in result.stderr


def test_rows_outside_the_window_are_not_read(experiment: str) -> None:
    result = runner.invoke(app, ["ab", "report", "--since", "2030-01-01T00:00Z"])
    assert result.exit_code == 1
    assert "no predictions since 2030-01-01 00:00:00 UTC" in result.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--since", "last tuesday"], "neither an ISO date/time"),
        (["--mde", "0"], "an accuracy difference of at least 0.0001"),
        (["--mde", "1e-300"], "an accuracy difference of at least 0.0001"),
        (["--since", "800000d"], "'800000d' reaches back before the year 1"),
        (["--method", "bayesian"], "'bayesian' is not one of"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    experiment: str, args: list[str], complaint: str
) -> None:
    result = runner.invoke(app, ["ab", "report", *args])
    assert result.exit_code == 2
    assert complaint in " ".join(result.stderr.split())


def test_missing_tables_are_one_line_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    monkeypatch.setenv("SENTIMENT_DATABASE_URL", f"sqlite:///{empty}")
    result = runner.invoke(app, ["ab", "report"])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert (
        line
        == f"error: cannot read the prediction log at sqlite:///{empty}: no such table: predictions"
    )


def test_unreachable_database_is_one_line(monkeypatch: pytest.MonkeyPatch, clean_env: None) -> None:
    monkeypatch.setenv(
        "SENTIMENT_DATABASE_URL", "postgresql+psycopg2://app:hunter2@127.0.0.1:9/predictions"
    )
    result = runner.invoke(app, ["ab", "report"])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "error: cannot read the prediction log at postgresql+psycopg2://app:***@"
    )
    assert "hunter2" not in result.output
