"""The MLflow UI over the project's store: what `make ui` runs.

The UI is part of the full `mlflow` package (Flask and the web app, ~850 MB), not of the
`mlflow-skinny` this project installs, so it runs from its own virtualenv (`make ui` builds
`.venv-ui`). This module only says how to start it on the store and artifact folder that
`Settings` names, so the UI shows the same runs, models and aliases as `sentiment`.

    python -m sentiment_mlops.ui --mlflow .venv-ui/bin/mlflow --port 5000
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from sentiment_mlops.config import ConfigError, Settings
from sentiment_mlops.databases import masked_url

DEFAULT_PORT = 5000


def server_command(
    settings: Settings, mlflow: Path, port: int = DEFAULT_PORT, host: str = "127.0.0.1"
) -> list[str]:
    """`mlflow server` over the tracking store and artifact folder of `settings`.

    Runs keep the `file://` artifact locations they were logged with, so the UI reads their
    files directly (no artifact proxy); experiments created from the UI store theirs in the
    project's artifact folder. One worker: this is for a person looking at runs.
    """
    store = settings.tracking_uri()
    if store.startswith(("http://", "https://", "databricks")):
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={store} is a tracking server, which has its own UI: "
            "open that address in a browser"
        )
    return [
        str(mlflow),
        "server",
        "--backend-store-uri",
        store,
        "--default-artifact-root",
        settings.artifact_location().as_uri(),
        "--no-serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Start the MLflow UI over the project's store.")
    parser.add_argument("--mlflow", type=Path, required=True, help="the full mlflow's command")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    settings = Settings()
    try:
        command = server_command(settings, args.mlflow, args.port)
    except ConfigError as exc:
        parser.exit(1, f"error: {exc}\n")
    settings.artifact_location().mkdir(parents=True, exist_ok=True)
    store = masked_url(settings.tracking_uri())
    print(f"MLflow UI on http://127.0.0.1:{args.port} over {store}", flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
