"""What importing a module pulls in, checked in a fresh interpreter.

This test process has long imported everything, so each check starts a new Python that
imports the given modules in order and reports, after each one, which of the watched
top-level packages are loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sentiment_mlops

SRC = str(Path(sentiment_mlops.__file__).resolve().parents[1])

PROBE = """
import importlib, json, sys
watched = set(json.loads(sys.argv[1]))
loaded = {}
for name in sys.argv[2:]:
    importlib.import_module(name)
    loaded[name] = sorted({m.split(".")[0] for m in sys.modules} & watched)
print(json.dumps(loaded))
"""


def loaded_after(modules: list[str], watched: set[str]) -> dict[str, list[str]]:
    """For each of `modules`, imported in order, the `watched` packages loaded by then."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(sorted(watched)), *modules],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, list[str]] = json.loads(result.stdout)
    return loaded


def test_training_modules_do_not_import_mlflow() -> None:
    """Fitting, evaluating and the model tests work without MLflow (only registry uses it)."""
    modules = [
        "sentiment_mlops.data",
        "sentiment_mlops.model",
        "sentiment_mlops.evaluate",
        "sentiment_mlops.train",
    ]
    loaded = loaded_after(modules, {"mlflow", "sklearn"})
    assert loaded["sentiment_mlops.train"] == ["sklearn"]  # the probe does see imports
    assert {name: found for name, found in loaded.items() if "mlflow" in found} == {}
