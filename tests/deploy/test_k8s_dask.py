"""deploy/k8s/dask: the Dask cluster `sentiment tune --scheduler tcp://dask-scheduler:8786`
searches on, in every overlay. The schema, checkov and pod-hardening checks of test_k8s.py
cover its objects too; here: the wiring, the options `dask` really has, and the versions."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from sentiment_mlops.runtime import PROCESS_ENV
from tests.deploy.conftest import OVERLAYS, ROOT, Manifest
from tests.deploy.locks import pins
from tests.deploy.test_k8s import Objects, container, find

DASK = Path(sys.executable).parent / "dask"
SCHEDULER = "tcp://dask-scheduler:8786"


def deployment_container(objects: list[Manifest], name: str) -> dict[str, Any]:
    return container(find(objects, "Deployment", name), name)


def options(args: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").partition("=")[::2] for arg in args if arg.startswith("--"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scheduler_and_workers_run_the_projects_image(rendered: Objects, overlay: str) -> None:
    """The workers import sentiment_mlops to run the trials: the project's serving image,
    whose `dask` is the one pinned in the lock; the API's (prod runs the API on the features
    image of the same release, deploy/k8s/feature-store)."""
    objects = rendered[overlay]
    api = deployment_container(objects, "ml-service")["image"]
    image = api.replace("/sentiment-mlops-features:", "/sentiment-mlops:")
    for name in ("dask-scheduler", "dask-worker"):
        found = deployment_container(objects, name)
        assert found["image"] == image, name
        assert found["command"] == ["dask"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_reach_the_scheduler_through_its_service(rendered: Objects, overlay: str) -> None:
    objects = rendered[overlay]
    scheduler = find(objects, "Deployment", "dask-scheduler")
    service = find(objects, "Service", "dask-scheduler")
    labels = scheduler["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    scheduler_container = container(scheduler, "dask-scheduler")
    container_ports = {p["name"]: p["containerPort"] for p in scheduler_container["ports"]}
    assert ports["comm"]["port"] == container_ports["comm"] == 8786
    assert options(scheduler_container["args"])["port"] == "8786"
    assert scheduler_container["readinessProbe"]["httpGet"]["port"] == "http"
    assert (
        options(scheduler_container["args"])["dashboard-address"] == f":{container_ports['http']}"
    )

    worker = deployment_container(objects, "dask-worker")
    assert worker["args"][:2] == ["worker", SCHEDULER]
    worker_options = options(worker["args"])
    assert worker_options["nthreads"] == "1"
    worker_ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert int(worker_options["worker-port"]) == worker_ports["worker"]
    assert int(worker_options["nanny-port"]) == worker_ports["nanny"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        assert env[name] == PROCESS_ENV[name]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_network_policies_let_the_cluster_talk(rendered: Objects, overlay: str) -> None:
    """Workers reach the scheduler's port and each other's; the scheduler reaches theirs."""
    objects = rendered[overlay]
    worker_options = options(deployment_container(objects, "dask-worker")["args"])
    worker_ports = {int(worker_options["worker-port"]), int(worker_options["nanny-port"])}

    def egress_ports(policy: str, to: str) -> set[int]:
        rules = find(objects, "NetworkPolicy", policy)["spec"]["egress"]
        return {
            port["port"]
            for rule in rules
            if any(
                peer.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": to}
                for peer in rule.get("to", [])
            )
            for port in rule["ports"]
        }

    assert egress_ports("dask-worker", "dask-scheduler") == {8786}
    assert egress_ports("dask-worker", "dask-worker") == worker_ports
    assert egress_ports("dask-scheduler", "dask-worker") == worker_ports
    ingress = find(objects, "NetworkPolicy", "dask-worker")["spec"]["ingress"]
    (rule,) = ingress
    assert {p["port"] for p in rule["ports"]} == {"worker", "nanny"}


@pytest.mark.parametrize("subcommand", ["scheduler", "worker"])
def test_every_option_is_one_dask_has(rendered: Objects, subcommand: str) -> None:
    """`dask <subcommand> --help` of the pinned release lists every option the manifests pass."""
    args = deployment_container(rendered["prod"], f"dask-{subcommand}")["args"]
    assert args[0] == subcommand
    done = subprocess.run(
        [str(DASK), subcommand, "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    for name in options(args):
        assert f"--{name}" in done.stdout, f"dask {subcommand} has no option --{name}"


def test_the_image_runs_the_dask_release_clients_run() -> None:
    """A client and a scheduler of different releases may not understand each other: the
    image's lock pins the dask and distributed installed here (regenerate with `make lock`)."""
    locked = pins(ROOT / "deploy" / "docker" / "requirements.lock")
    for name in ("dask", "distributed"):
        assert locked[name] == metadata.version(name), name
