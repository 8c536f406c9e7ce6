"""deploy/prometheus: the scrape config and the rules are valid, every alert is tested both ways
by alerts_test.yml, and those tests pass (promtool)."""

from __future__ import annotations

import re

from .monitoring import (
    ALERT_RULES,
    ALERT_TESTS,
    JOB,
    PROMETHEUS_CONFIG,
    RECORDING_RULES,
    ROOT,
    load_yaml,
    promtool,
    recorded_names,
    rules,
    selectors,
)


def test_the_scrape_config_and_the_rule_files_it_names_are_valid() -> None:
    output = promtool("check", "config", PROMETHEUS_CONFIG)
    assert "2 rule files found" in output
    config = load_yaml(PROMETHEUS_CONFIG)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB
    assert job["static_configs"] == [{"targets": ["api:8000"]}]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"] == [RECORDING_RULES.name, ALERT_RULES.name]


def test_the_rules_are_valid() -> None:
    promtool("check", "rules", RECORDING_RULES, ALERT_RULES)


def test_the_alert_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", ALERT_TESTS)


def test_every_alert_is_tested_firing_on_a_bad_series_and_silent_on_a_healthy_one() -> None:
    alerts = {rule["alert"] for rule in rules(ALERT_RULES) if "alert" in rule}
    fired: set[str] = set()
    silent: set[str] = set()
    for test in load_yaml(ALERT_TESTS)["tests"]:
        for check in test.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    assert not (fired | silent) - alerts, "tests of alerts that do not exist"
    assert alerts - fired == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested silent"


def test_the_rules_read_only_the_api_job() -> None:
    """So that a Prometheus scraping other services too (Kubernetes) never mixes their series
    into ours; recording-rule outputs already are the API's."""
    own = recorded_names()
    for rule in rules(RECORDING_RULES) + rules(ALERT_RULES):
        for name, equal in selectors(rule["expr"]):
            if name not in own:
                assert equal.get("job") == JOB, f"{name} without job={JOB!r} in {rule['expr']}"


def test_the_readme_runbook_has_a_row_for_every_alert() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `(Sentiment\w+)` \|", readme, flags=re.MULTILINE))
    assert rows == {rule["alert"] for rule in rules(ALERT_RULES) if "alert" in rule}
