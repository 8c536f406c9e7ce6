"""deploy/k8s: every overlay renders, passes the Kubernetes API schemas (strict, no unknown
kind) and checkov, and keeps what matters: the shared names, the pod hardening, the probes,
the drain on shutdown, no secret value, three API pods in prod."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from sentiment_mlops.cli import app
from sentiment_mlops.config import Settings
from sentiment_mlops.serving.metrics import Metrics
from sentiment_mlops.serving.server import uvicorn_options
from tests.deploy.conftest import K8S, OVERLAYS, ROOT, Manifest

# The Kubernetes releases the manifests are checked against: 1.30, the first with the preStop
# `sleep` action on by default (README.md says 1.30 or later), and 1.37, the newest whose
# schemas kubernetes-validate (pinned in pyproject.toml) ships.
KUBERNETES_VERSIONS = ("1.30", "1.37")
# Settings that hold secrets: they come from a Secret, never from the ConfigMap.
SECRET_SETTINGS = {
    "jwt_secret",
    "jwt_private_key",
    "subject_key",
    "database_url",
    "features_registry",
}

Objects = dict[str, list[Manifest]]


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def kinds(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def container(deployment: Manifest, name: str) -> dict[str, Any]:
    (match,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name
    ]
    return match


def pod_templates(objects: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """(name, pod template) of every Deployment and CronJob."""
    for deployment in kinds(objects, "Deployment"):
        yield deployment["metadata"]["name"], deployment["spec"]["template"]
    for job in kinds(objects, "CronJob"):
        yield job["metadata"]["name"], job["spec"]["jobTemplate"]["spec"]["template"]


def config_data(objects: list[Manifest]) -> dict[str, str]:
    return dict(find(objects, "ConfigMap", "ml-service-config")["data"])


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair anywhere in a manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


# -- the tools --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_passes_the_kubernetes_schemas(
    rendered: Objects, overlay: str, version: str
) -> None:
    """Strict: an unknown field is an error, and so is a kind or apiVersion the schemas of
    that Kubernetes release do not know (the CLI would only warn)."""
    problems = []
    for manifest in rendered[overlay]:
        what = f"{manifest['kind']} {manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{what}: no schema for {manifest['apiVersion']}")
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{what}: {exc.message} at {'.'.join(map(str, exc.path))}")
    assert not problems, "\n".join(problems)


def test_checkov_finds_nothing(rendered_files: dict[str, Path]) -> None:
    """checkov (offline) over every overlay with deploy/k8s/.checkov.yaml: no failed check."""
    checkov = os.environ.get("SENTIMENT_TEST_CHECKOV")
    if not checkov:
        pytest.skip("checkov lives in its own venv: run `make test` (SENTIMENT_TEST_CHECKOV)")
    files = [arg for path in rendered_files.values() for arg in ("-f", str(path))]
    done = subprocess.run(
        [checkov, "--config-file", str(K8S / ".checkov.yaml"), *files],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Failed checks: 0" in done.stdout, done.stdout


def test_every_checkov_skip_says_why() -> None:
    lines = (K8S / ".checkov.yaml").read_text(encoding="utf-8").splitlines()
    config = yaml.safe_load("\n".join(lines))
    for check in config["skip-check"]:
        at = next(i for i, line in enumerate(lines) if line.strip() == f"- {check}")
        assert lines[at - 1].strip().startswith("#"), f"{check} is skipped without a reason"
    assert config["skip-download"] is True  # offline: no call to Prisma Cloud


# -- names and wiring -----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_tutorials_names(rendered: Objects, overlay: str) -> None:
    objects = rendered[overlay]
    deployment = find(objects, "Deployment", "ml-service")
    service = find(objects, "Service", "ml-service")
    find(objects, "ConfigMap", "ml-service-config")
    find(objects, "ConfigMap", "prometheus-config")
    claim = find(objects, "PersistentVolumeClaim", "model-storage")
    api = container(deployment, "ml-service")
    assert api["ports"] == [{"name": "http", "containerPort": 8000}]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    mlflow = find(objects, "Deployment", "mlflow")["spec"]["template"]["spec"]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in mlflow["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [claim["metadata"]["name"]]
    namespace = kinds(objects, "Namespace")[0]["metadata"]["name"]
    for manifest in objects:
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == namespace, manifest["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configmap_holds_real_settings_and_no_secret(
    rendered: Objects, overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each SENTIMENT_* key is a setting the server reads (a typo would be ignored silently),
    its value passes the server's own validation, and no secret setting is among them."""
    data = config_data(rendered[overlay])
    prefix = Settings.model_config["env_prefix"]
    known = {f"{prefix}{name}".upper() for name in Settings.model_fields}
    for key in data:
        if key.startswith(prefix):
            assert key in known, f"{key} is not a setting of sentiment_mlops.config.Settings"
    assert not {f"{prefix}{name}".upper() for name in SECRET_SETTINGS} & data.keys()
    for name in list(os.environ):
        if name.startswith(prefix) or name == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(name)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert not settings.auth_disabled
    assert settings.tracking_uri() == "http://mlflow:5000"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_reads_its_secrets_from_the_secret(rendered: Objects, overlay: str) -> None:
    env = {
        e["name"]: e
        for e in container(find(rendered[overlay], "Deployment", "ml-service"), "ml-service")["env"]
    }
    for name, key in [
        ("SENTIMENT_JWT_SECRET", "jwt-secret"),
        ("SENTIMENT_SUBJECT_KEY", "subject-key"),
        ("SENTIMENT_DATABASE_URL", "database-url"),
    ]:
        reference = env[name]["valueFrom"]["secretKeyRef"]
        assert (reference["name"], reference["key"]) == ("ml-service-secrets", key)
    # prod needs all; dev runs without the Secret (generated dev secret and subject key,
    # SQLite).
    required = {
        name: not variable["valueFrom"]["secretKeyRef"].get("optional", False)
        for name, variable in env.items()
        if "secretKeyRef" in variable.get("valueFrom", {})
    }
    if overlay == "prod":  # with entity features: Feast's SQL registry too
        assert required == {
            "SENTIMENT_JWT_SECRET": True,
            "SENTIMENT_SUBJECT_KEY": True,
            "SENTIMENT_DATABASE_URL": True,
            "SENTIMENT_FEATURES_REGISTRY": True,
        }
    else:
        assert required == {
            "SENTIMENT_JWT_SECRET": False,
            "SENTIMENT_SUBJECT_KEY": False,
            "SENTIMENT_DATABASE_URL": False,
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_value_is_committed(rendered: Objects, overlay: str) -> None:
    """No Secret object in any render (they are created with kubectl, README.md), and no
    literal value for a variable that names a secret or a database URL."""
    objects = rendered[overlay]
    assert not kinds(objects, "Secret")
    secretish = re.compile(
        r"SECRET|PASSWORD|TOKEN|PRIVATE_KEY|SUBJECT_KEY|DATABASE_URL|BACKEND_STORE_URI|"
        r"FEATURES_REGISTRY"
    )
    for manifest in objects:
        for key, value in walk(manifest):
            if key in {"env", "data", "stringData"} and isinstance(value, list):
                for variable in value:
                    if secretish.search(variable["name"]) and "value" in variable:
                        assert overlay == "dev" and variable["value"].startswith("sqlite:"), (
                            f"{manifest['metadata']['name']}: {variable['name']} has a value"
                        )


# -- the pods -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_locked_down(rendered: Objects, overlay: str) -> None:
    objects = rendered[overlay]
    for manifest in objects:
        assert ("automountServiceAccountToken", True) not in walk(manifest)
    for account in kinds(objects, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    for name, template in pod_templates(objects):
        pod = template["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["enableServiceLinks"] is False, name
        assert pod["serviceAccountName"] == name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in pod["containers"]:
            security = c["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["runAsNonRoot"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= c["resources"][kind].keys(), (name, kind)
            assert not c["image"].endswith(":latest") and ":" in c["image"], c["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_probes_drains_and_writes_only_to_its_volumes(
    rendered: Objects, overlay: str
) -> None:
    objects = rendered[overlay]
    deployment = find(objects, "Deployment", "ml-service")
    pod = deployment["spec"]["template"]["spec"]
    api = container(deployment, "ml-service")
    assert api["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert api["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    # Traffic stops reaching the pod during the preStop sleep; after SIGTERM /ready reports
    # draining for the grace period, uvicorn waits for the requests in flight, then the
    # prediction log writes what is queued (PredictionLog.close waits at most the flush time,
    # the database timeout and a second).
    settings = config_data(objects)
    drain = (
        api["lifecycle"]["preStop"]["sleep"]["seconds"]
        + float(settings["SENTIMENT_SHUTDOWN_GRACE_SECONDS"])
        + uvicorn_options(Settings())["timeout_graceful_shutdown"]
        + float(settings["SENTIMENT_PREDICTION_LOG_FLUSH_SECONDS"])
        + float(settings["SENTIMENT_DATABASE_TIMEOUT_SECONDS"])
        + 1
    )
    assert pod["terminationGracePeriodSeconds"] >= drain
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in api["volumeMounts"]}
    for path in (settings["SENTIMENT_VAR_DIR"], "/tmp", settings["PROMETHEUS_MULTIPROC_DIR"]):
        assert "emptyDir" in volumes[mounts[path]], path
    metrics = volumes[mounts[settings["PROMETHEUS_MULTIPROC_DIR"]]]["emptyDir"]
    assert metrics["medium"] == "Memory" and metrics["sizeLimit"]
    routing = Path(settings["SENTIMENT_ROUTING"])
    assert volumes[mounts[str(routing.parent)]]["configMap"]["name"] == "ml-service-routing"
    routing_file = find(objects, "ConfigMap", "ml-service-routing")["data"][routing.name]
    assert yaml.safe_load(routing_file)["variants"] == {"champion": 100}


def test_prod_runs_three_api_pods_and_keeps_two(rendered: Objects) -> None:
    """The HPA owns the count (at least 3); the Deployment sets none, so `kubectl apply`
    never scales back what the HPA scaled up."""
    objects = rendered["prod"]
    autoscaler = find(objects, "HorizontalPodAutoscaler", "ml-service")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["minReplicas"] == 3 < autoscaler["spec"]["maxReplicas"]
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "ml-service"
    assert "replicas" not in find(objects, "Deployment", "ml-service")["spec"]
    budget = find(objects, "PodDisruptionBudget", "ml-service")["spec"]
    assert budget == {"minAvailable": 2, "selector": budget["selector"]}
    assert find(objects, "Deployment", "ml-service")["spec"]["template"]["spec"]["containers"][0][
        "image"
    ].startswith("ghcr.io/")


def test_dev_runs_one_api_pod_without_an_autoscaler(rendered: Objects) -> None:
    objects = rendered["dev"]
    assert find(objects, "Deployment", "ml-service")["spec"]["replicas"] == 1
    assert not kinds(objects, "HorizontalPodAutoscaler")


def test_the_autoscaler_scales_on_cpu_and_on_request_rate(rendered: Objects) -> None:
    """The request rate is prometheus-adapter's http_requests_per_second, computed from a
    counter the API exports (deploy/k8s/prometheus-adapter.yaml)."""
    metrics = find(rendered["prod"], "HorizontalPodAutoscaler", "ml-service")["spec"]["metrics"]
    assert {
        (m["type"], m.get("resource", m.get("pods", {})).get("name") or m["pods"]["metric"]["name"])
        for m in metrics
    } == {
        ("Resource", "cpu"),
        ("Pods", "http_requests_per_second"),
    }
    adapter = yaml.safe_load((K8S / "prometheus-adapter.yaml").read_text(encoding="utf-8"))
    (rule,) = adapter["rules"]["custom"]
    assert rule["name"]["as"] == "http_requests_per_second"
    exported = {family.name for family in Metrics().registry.collect()}
    assert rule["name"]["matches"] == "^http_requests_total$" and "http_requests" in exported


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_has_a_network_policy_both_ways(rendered: Objects, overlay: str) -> None:
    objects = rendered[overlay]
    policies = kinds(objects, "NetworkPolicy")
    for name, template in pod_templates(objects):
        labels = template["metadata"]["labels"]
        covering = [
            p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert covering, name
        assert {"Ingress", "Egress"} <= {t for p in covering for t in p["spec"]["policyTypes"]}


# -- Prometheus -----------------------------------------------------------------------------


def prometheus_files(objects: list[Manifest]) -> dict[str, str]:
    return dict(find(objects, "ConfigMap", "prometheus-config")["data"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_discovers_the_api_pods_with_a_token_of_its_own(
    rendered: Objects, overlay: str
) -> None:
    objects = rendered[overlay]
    config = yaml.safe_load(prometheus_files(objects)["prometheus.yml"])
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "sentiment-api"  # what the alert rules select
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"own_namespace": True}}]
    role = find(objects, "Role", "prometheus")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["pods", "endpoints", "services"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    binding = find(objects, "RoleBinding", "prometheus")
    assert binding["roleRef"]["name"] == "prometheus"
    assert [s["name"] for s in binding["subjects"]] == ["prometheus"]
    pod = find(objects, "Deployment", "prometheus")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    token = volumes[mounts["/var/run/secrets/kubernetes.io/serviceaccount"]]["projected"]
    assert any("serviceAccountToken" in source for source in token["sources"])
    assert volumes[mounts["/etc/prometheus"]]["configMap"]["name"] == "prometheus-config"
    # The API's pods ask to be scraped where they serve /metrics.
    annotations = find(objects, "Deployment", "ml-service")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000"


def test_prometheus_rule_files_are_the_compose_stacks(rendered: Objects) -> None:
    """kustomize reads no file outside its folder, so the rule files of deploy/prometheus live
    in deploy/k8s/base/prometheus too: the same files, byte for byte."""
    compose = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    kubernetes = yaml.safe_load(prometheus_files(rendered["prod"])["prometheus.yml"])
    wanted = (
        yaml.safe_load(compose.read_text(encoding="utf-8")).get("rule_files", [])
        if compose.is_file()
        else []
    )
    assert kubernetes.get("rule_files", []) == wanted, (
        "deploy/k8s/base/prometheus/prometheus.yml must name the rule files "
        "deploy/prometheus/prometheus.yml names, copied beside it and listed under "
        "prometheus-config in deploy/k8s/base/kustomization.yaml"
    )
    files = prometheus_files(rendered["prod"])
    for name in wanted:
        source = compose.parent / name
        assert files[name] == source.read_text(encoding="utf-8"), (
            f"copy {source.relative_to(ROOT)} to deploy/k8s/base/prometheus/"
        )


# The settings the materialising job and the API must agree on to share entity features.
SHARED_FEATURE_SETTINGS = (
    "SENTIMENT_FEATURES_ONLINE_STORE",
    "SENTIMENT_FEATURES_REDIS",
    "SENTIMENT_FEATURES_REGISTRY",
)


def test_prod_materialises_features_from_the_log_on_a_schedule(rendered: Objects) -> None:
    objects = rendered["prod"]
    job = find(objects, "CronJob", "features-materialize")
    spec = job["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["suspend"] is False
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (runner,) = pod["containers"]
    name, _, tag = runner["image"].rpartition(":")
    assert name.endswith("/sentiment-mlops-features") and tag, "the features image, pinned"
    assert runner["args"] == ["features", "materialize"]
    usage = CliRunner().invoke(app, [*runner["args"], "--help"])
    assert usage.exit_code == 0, usage.output
    env = {item["name"]: item for item in runner["env"]}
    settings = Settings(
        features_dir=env["SENTIMENT_FEATURES_DIR"]["value"],
        features_online_store=env["SENTIMENT_FEATURES_ONLINE_STORE"]["value"],
        features_redis=env["SENTIMENT_FEATURES_REDIS"]["value"],
    )
    assert settings.features_online_store == "redis"
    assert env["SENTIMENT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "ml-service-secrets",
        "key": "database-url",
    }
    assert env["SENTIMENT_FEATURES_REGISTRY"]["valueFrom"]["secretKeyRef"] == {
        "name": "ml-service-secrets",
        "key": "features-registry",
    }
    mounts = {m["mountPath"]: m["name"] for m in runner["volumeMounts"]}
    assert mounts[env["SENTIMENT_FEATURES_DIR"]["value"]] == "features"
    claims = {v["name"]: v.get("persistentVolumeClaim") for v in pod["volumes"]}
    assert claims["features"] == {"claimName": "feature-store"}
    find(objects, "PersistentVolumeClaim", "feature-store")
    assert not kinds(rendered["dev"], "CronJob")


def test_prod_api_reads_the_jobs_features_through_the_registry_and_redis(
    rendered: Objects,
) -> None:
    """The API's pods cannot mount the job's volume (ReadWriteOnce): they share the SQL
    registry (the same Secret key) and Redis with it, and run the same features image."""
    objects = rendered["prod"]
    runner = find(objects, "CronJob", "features-materialize")["spec"]["jobTemplate"]["spec"][
        "template"
    ]["spec"]["containers"][0]
    deployment = find(objects, "Deployment", "ml-service")
    api = container(deployment, "ml-service")
    assert api["image"] == runner["image"]
    job_env = {item["name"]: item for item in runner["env"]}
    api_env = {item["name"]: item for item in api["env"]}
    for name in SHARED_FEATURE_SETTINGS:
        assert api_env[name] == job_env[name], name
    assert "SENTIMENT_FEATURES_DIR" not in api_env  # nothing of the job's folder
    assert not any(
        "persistentVolumeClaim" in v for v in deployment["spec"]["template"]["spec"]["volumes"]
    )
    # The API may reach Redis and PostgreSQL (the registry) under its network policies.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = {
        port["port"]
        for policy in kinds(objects, "NetworkPolicy")
        if policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        for rule in policy["spec"].get("egress", [])
        for port in rule.get("ports", [])
    }
    assert {5432, 6379} <= ports
    # dev serves the plain image, without Feast.
    dev_api = container(find(rendered["dev"], "Deployment", "ml-service"), "ml-service")
    assert dev_api["image"].rpartition(":")[0] == "sentiment-mlops"
    assert "SENTIMENT_FEATURES_REGISTRY" not in {e["name"] for e in dev_api.get("env", [])}
