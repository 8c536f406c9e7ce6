"""The real API for the monitoring tests: the default model as `champion` in a registry of the
test module's own, served by `sentiment serve` as users start it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sklearn.pipeline import Pipeline

from sentiment_mlops.serving.launcher import ServerProcess

from ..apps import write_routing
from ..integration.server import register_into, start_server


@pytest.fixture(scope="module")
def start_api(
    tmp_path_factory: pytest.TempPathFactory, default_model: Pipeline
) -> Callable[[int], ServerProcess]:
    """Starts `sentiment serve` with `workers` workers, every user on `champion`; the test
    stops it."""
    folder = tmp_path_factory.mktemp("api")
    var = folder / "var"
    register_into(var, default_model, alias="champion")
    routing = write_routing(
        folder / "routing.yaml", experiment="monitoring", variants={"champion": 100}
    )

    def start(workers: int) -> ServerProcess:
        return start_server(var, folder / f"serve-{workers}.log", workers, routing=routing)

    return start
