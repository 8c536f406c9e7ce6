"""The real server for process-level tests: trained into a registry, started as users start it."""

from __future__ import annotations

from pathlib import Path

from sklearn.pipeline import Pipeline

from sentiment_mlops.config import Settings, TrainConfig
from sentiment_mlops.registry import Registry
from sentiment_mlops.serving.launcher import ServerProcess, server_env
from sentiment_mlops.train import DataSpec, fit, load_split

from ..apps import SECRET


def train_into(var: Path, config: TrainConfig | None = None, alias: str | None = None) -> int:
    """Train the default model on the built-in data and register it in `var`'s store."""
    config, spec = config or TrainConfig(), DataSpec()
    registry = Registry(Settings(var_dir=var))
    result = fit(load_split(spec, config), config, spec)
    return registry.register_training(result, alias).version


def register_into(var: Path, pipeline: Pipeline, alias: str | None = None) -> int:
    """Register an already fitted pipeline as a new version in `var`'s store: for tests about
    serving, where fitting again would only cost time."""
    registry = Registry(Settings(var_dir=var))
    version = registry.register(
        pipeline,
        params={"source": "tests"},
        metrics={},
        tags={"data_source": "tests"},
        alias=alias,
    )
    return version.version


def start_server(var: Path, log_path: Path, workers: int = 1, **settings: object) -> ServerProcess:
    """`sentiment serve` over `var`'s registry, signing with the test secret."""
    env = server_env(var, **{"jwt_secret": SECRET, "shutdown_grace_seconds": 0.5, **settings})
    return ServerProcess(env, log_path, workers)
