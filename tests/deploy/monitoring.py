"""The monitoring files as tests read them: promtool, the PromQL in the rules and in the Grafana
dashboard, the metric names a `/metrics` page exports, and a Prometheus server of the test's own.

promtool and prometheus come from Debian's `prometheus` package (`.ci/run` installs it).
PromQL is parsed with `promql_parser` to find the metrics an expression reads; promtool alone
decides whether an expression is valid.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sentiment_mlops.serving.launcher import HOST, free_port

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RECORDING_RULES = PROMETHEUS_DIR / "recording.yml"
ALERT_RULES = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "sentiment.json"
JOB = "sentiment-api"

# Concrete values for the Grafana variables the dashboard's queries use.
GRAFANA_VALUES = {
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "1h",
    "job": JOB,
    "variant": "champion",
    "model_version": "1",
}
_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)\s*$")

# Metrics every configuration must name in the Prometheus server itself, not in the API.
PROMETHEUS_OWN = frozenset({"up", "ALERTS"})


def tool(name: str) -> str:
    """The path of Debian's `name` (promtool, prometheus); skips the test where it is absent."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed: apt-get install prometheus (.ci/run does)")
    return path


def promtool(*args: str | Path) -> str:
    """Run promtool; its output, or a test failure showing it."""
    done = subprocess.run(
        [tool("promtool"), *map(str, args)], capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"promtool {' '.join(map(str, args))} failed:\n{output}")
    return output


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules(path: Path) -> list[dict[str, Any]]:
    """Every rule (recording or alerting) in a Prometheus rule file."""
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules(RECORDING_RULES)}


def grafana_expr(expr: str) -> str:
    """`expr` with its Grafana variables (`$job`, `${variant}`, `$__rate_interval`) replaced
    by concrete values; KeyError for a variable the dashboard does not define."""
    return _GRAFANA_VARIABLE.sub(lambda m: GRAFANA_VALUES[m.group(1) or m.group(2)], expr)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    return [node for node in _walk(board["panels"]) if "gridPos" in node]


def dashboard_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target's `expr` and every `label_values` variable,
    Grafana variables replaced by concrete values."""
    found = []
    for panel in panels(board):
        for target in panel.get("targets", []):
            where = f"panel {panel['title']!r} target {target.get('refId')}"
            found.append((where, grafana_expr(target["expr"])))
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        assert match, f"variable {variable['name']}: not a label_values() query: {text}"
        found.append((f"variable {variable['name']!r}", grafana_expr(match["selector"])))
    return found


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """(metric name, {label: value} of its `=` matchers) for each selector in `expr`; each
    selector must name its metric."""
    found: list[tuple[str, dict[str, str]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            equal = {
                m.name: m.value
                for m in node.matchers.matchers
                if m.op == promql_parser.MatchOp.Equal
            }
            name = node.name or equal.get("__name__")
            assert name, f"a selector without a metric name in {expr}"
            found.append((name, equal))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names `expr`'s selectors read."""
    return {name for name, _ in selectors(expr)}


def exported_names(exposition: str) -> set[str]:
    """The series names a `/metrics` page exports: each family's samples, and for families
    declared without samples yet, the names their type gives them (`_total` for a counter;
    `_bucket`, `_count`, `_sum` for a histogram)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        elif family.type == "summary":
            names.update({family.name, f"{family.name}_count", f"{family.name}_sum"})
        else:
            names.add(family.name)
    return names


def scrape_config(api: str, folder: Path) -> Path:
    """deploy/prometheus/prometheus.yml for a test, written to `folder` with copies of the
    rule files: scraping `api` (host:port) every second, and every rule group evaluated every
    second (the groups' own intervals dropped)."""
    config = load_yaml(PROMETHEUS_CONFIG)
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    for name in config["rule_files"]:
        groups = load_yaml(PROMETHEUS_DIR / name)["groups"]
        for group in groups:
            group.pop("interval", None)
        (folder / name).write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    (job,) = [c for c in config["scrape_configs"] if c["job_name"] == JOB]
    job["static_configs"] = [{"targets": [api]}]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class PrometheusServer:
    """Debian's Prometheus on a free loopback port, with its data in `folder`; its output goes
    to `folder`/prometheus.log. Stop it with `stop()` (or use it as a context manager)."""

    def __init__(self, config: Path, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = folder / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={HOST}:{self.port}",
                "--log.format=json",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def get(self, path: str, **params: str) -> Any:
        """The `data` of a JSON API answer, or None while the server cannot answer yet (not
        listening, or 503 until it is ready); a test failure if it refuses the request."""
        if self.proc.poll() is not None:
            pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.tail()}")
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                return None
            pytest.fail(f"prometheus refused {path} {params}: {exc.code} {exc.read()!r}")
        except (OSError, ValueError):
            return None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]] | None:
        """The instant vector `expr` gives now, or None while the server cannot answer."""
        data = self.get("/api/v1/query", query=expr)
        return None if data is None else list(data["result"])

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]
