"""The deploy files as an operator uses them: each Kubernetes overlay rendered by `kubectl
kustomize` (the same as `kubectl apply -k` applies), once per session; and the real API for
the monitoring tests: the default model as `champion` in a registry of the test module's own,
served by `sentiment serve` as users start it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sklearn.pipeline import Pipeline

from sentiment_mlops.serving.launcher import ServerProcess

from ..apps import write_routing
from ..integration.server import register_into, start_server

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")

Manifest = dict[str, Any]


def render(overlay: str) -> list[Manifest]:
    """The objects `kubectl apply -k deploy/k8s/overlays/<overlay>` would apply."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: it renders the kustomizations (install kubectl)")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize overlays/{overlay}:\n{done.stderr}"
    return [document for document in yaml.safe_load_all(done.stdout) if document]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Manifest]]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def rendered_files(
    rendered: dict[str, list[Manifest]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Each overlay's render as one YAML file, for tools that read files."""
    folder = tmp_path_factory.mktemp("rendered")
    files = {}
    for overlay, objects in rendered.items():
        files[overlay] = folder / f"{overlay}.yaml"
        files[overlay].write_text(yaml.safe_dump_all(objects), encoding="utf-8")
    return files


@pytest.fixture(scope="module")
def start_api(
    tmp_path_factory: pytest.TempPathFactory, default_model: Pipeline
) -> Iterator[Callable[[int], ServerProcess]]:
    """Starts `sentiment serve` with `workers` workers, every user on `champion`. A test may
    stop its servers early; the fixture stops whatever is still running when the module ends,
    on every path (a skip, a failure)."""
    folder = tmp_path_factory.mktemp("api")
    var = folder / "var"
    register_into(var, default_model, alias="champion")
    routing = write_routing(
        folder / "routing.yaml", experiment="monitoring", variants={"champion": 100}
    )
    started: list[ServerProcess] = []

    def start(workers: int) -> ServerProcess:
        log = folder / f"serve-{len(started)}-{workers}.log"
        started.append(start_server(var, log, workers, routing=routing))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.stop()
