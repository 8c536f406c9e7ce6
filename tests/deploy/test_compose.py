"""deploy/compose/compose.yaml: renders with podman-compose, refuses to start without its
secrets, and everything it names exists: build contexts and Dockerfiles, `sentiment`
subcommands and options, Prometheus flags, mounted files, the services Prometheus scrapes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from sentiment_mlops.cli import app
from sentiment_mlops.config import Settings
from tests.deploy.podman import ROOT

COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
SECRETS = {
    "SENTIMENT_JWT_SECRET": "s" * 48,
    "POSTGRES_PASSWORD": "pw0123456789",
    "GRAFANA_ADMIN_PASSWORD": "gpw0123456789",
}
SERVICES = {"postgres", "mlflow", "train", "api", "prometheus", "grafana"}
SERVING_IMAGE = "localhost/sentiment-mlops:local"
# Written by the monitoring work; their mounts are checked once the folders exist.
MONITORING = (ROOT / "deploy" / "prometheus", ROOT / "deploy" / "grafana")


def raw() -> dict[str, Any]:
    """The file as YAML (anchors merged, variables not interpolated)."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = raw()["services"]
    return found


def podman_compose(tmp_path: Path, values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`podman-compose config` with only `values` for the secrets (no .env, no environment)."""
    tool = Path(sys.executable).with_name("podman-compose")
    if not tool.is_file() or shutil.which("podman") is None:
        pytest.skip("podman-compose config needs podman-compose (dev extras) and podman")
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [str(tool), "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_podman_compose_renders_the_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    done = podman_compose(tmp_path, SECRETS)
    assert done.returncode == 0, done.stderr[-3000:]
    rendered = yaml.safe_load(done.stdout)
    assert set(rendered["services"]) == SERVICES
    api = rendered["services"]["api"]["environment"]
    assert api["SENTIMENT_JWT_SECRET"] == SECRETS["SENTIMENT_JWT_SECRET"]
    assert f":{SECRETS['POSTGRES_PASSWORD']}@postgres:5432/" in api["SENTIMENT_DATABASE_URL"]
    for name, value in api.items():  # the API's settings, as its container reads them
        monkeypatch.setenv(name, str(value))
    settings = Settings()
    assert settings.workers == 2 and settings.tracking_uri() == "http://mlflow:5000"
    assert settings.prediction_log_url().endswith("@postgres:5432/predictions")


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(tmp_path: Path, missing: str) -> None:
    done = podman_compose(tmp_path, {k: v for k, v in SECRETS.items() if k != missing})
    assert done.returncode != 0
    assert f"required variable {missing} is missing a value: set {missing}" in done.stderr


def test_no_secret_value_is_committed() -> None:
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("SECRET", "PASSWORD", "DATABASE_URL", "STORE_URI")):
                assert "${" in str(value), f"{name}.{key} holds a literal value"
    example = (COMPOSE_DIR / ".env.example").read_text().splitlines()
    assigned = dict(line.split("=", 1) for line in example if line and not line.startswith("#"))
    assert set(assigned) == set(SECRETS) and not any(assigned.values())
    ignored = subprocess.run(
        ["git", "check-ignore", "--quiet", "--no-index", str(COMPOSE_DIR / ".env")], cwd=ROOT
    )
    assert ignored.returncode == 0, "deploy/compose/.env must be git-ignored"


def test_each_build_context_and_dockerfile_exists() -> None:
    built = {name: s["build"] for name, s in services().items() if "build" in s}
    assert set(built) == {"mlflow", "train", "api"}
    for name, build in built.items():
        context = (COMPOSE_DIR / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build["dockerfile"]).is_file(), name


def test_other_images_are_pinned_by_tag() -> None:
    for name, service in services().items():
        if "build" not in service:
            image = service["image"]
            assert image.startswith("docker.io/"), f"{name}: give the registry: {image}"
            tag = image.rpartition(":")[2]
            assert "/" not in tag and tag != "latest", f"{name}: pin a version: {image}"


def _usage(args: list[str]) -> str:
    """The usage line of `sentiment ARGS --help`: exit status 0 only when every subcommand and
    option in ARGS exists (click rejects an unknown option before it shows help)."""
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"sentiment {' '.join(args)}: {result.output}"
    return result.output.strip().splitlines()[0]


@pytest.mark.parametrize("name", ["train", "api"])
def test_serving_image_commands_are_real_subcommands(name: str) -> None:
    service = services()[name]
    assert service["image"] == SERVING_IMAGE
    usage = _usage(service["command"])
    assert f" {dict(train='train', api='serve')[name]} [OPTIONS]" in usage, usage


def test_prometheus_flags_exist() -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("no prometheus binary to ask (Debian package prometheus)")
    done = subprocess.run(["prometheus", "--help"], capture_output=True, text=True, timeout=30)
    usage = done.stdout + done.stderr
    for flag in services()["prometheus"]["command"]:
        assert f"{flag.split('=')[0]}" in usage, flag


def test_the_api_starts_after_the_first_model_is_registered() -> None:
    api, train = services()["api"], services()["train"]
    assert api["depends_on"]["train"] == {"condition": "service_completed_successfully"}
    assert "--if-no-champion" in train["command"] and train["restart"] == "no"
    assert train["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert api["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_the_project_containers_run_read_only_with_a_tmpfs() -> None:
    for name in ("mlflow", "train", "api"):
        service = services()[name]
        assert service["read_only"] is True and "/tmp" in service["tmpfs"], name


def _host_paths() -> list[tuple[str, Path]]:
    paths = []
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                paths.append((name, (COMPOSE_DIR / source).resolve()))
    return paths


@pytest.mark.parametrize("service, path", _host_paths(), ids=lambda v: str(v))
def test_mounted_files_exist(service: str, path: Path) -> None:
    for folder in MONITORING:
        if path.is_relative_to(folder) and not folder.is_dir():
            pytest.skip(f"{folder.relative_to(ROOT)} is not written yet (monitoring work)")
    assert path.exists(), f"{service} mounts {path}, which does not exist"


def test_prometheus_scrapes_compose_services_and_finds_its_rules() -> None:
    config_file = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    if not config_file.is_file():
        pytest.skip("deploy/prometheus/prometheus.yml is not written yet (monitoring work)")
    config = yaml.safe_load(config_file.read_text())
    mounted = {
        Path(v.split(":")[1]).name
        for v in services()["prometheus"]["volumes"]
        if v.startswith("../prometheus/")
    }
    assert set(config.get("rule_files", [])) <= mounted
    ports = {"api": "8000"}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.partition(":")
                assert host in services(), f"{job['job_name']} scrapes {target}: no such service"
                assert ports.get(host) == port, target
