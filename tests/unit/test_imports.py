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
from typing import Any

import sentiment_mlops
from sentiment_mlops.runtime import PROCESS_ENV

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


def fresh_python(code: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run `code` in a new interpreter (with this checkout's source) and parse its JSON output."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**(os.environ if env is None else env), "PYTHONPATH": SRC},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def loaded_after(modules: list[str], watched: set[str]) -> dict[str, list[str]]:
    """For each of `modules`, imported in order, the `watched` packages loaded by then."""
    loaded: dict[str, list[str]] = fresh_python(PROBE, json.dumps(sorted(watched)), *modules)
    return loaded


def test_training_modules_do_not_import_mlflow() -> None:
    """Fitting, evaluating, tuning and the model tests need neither MLflow (only the registry
    uses it) nor matplotlib (imported when plots are drawn)."""
    modules = [
        "sentiment_mlops.data",
        "sentiment_mlops.model",
        "sentiment_mlops.scorer",
        "sentiment_mlops.text",
        "sentiment_mlops.nb_scaling",
        "sentiment_mlops.evaluate",
        "sentiment_mlops.train",
        "sentiment_mlops.tuning.space",
        "sentiment_mlops.tuning.work",
        "sentiment_mlops.tuning.search",
        "sentiment_mlops.tuning.cluster",
        "sentiment_mlops.tuning.progress",
        "sentiment_mlops.tuning.compare",
    ]
    loaded = loaded_after(modules, {"mlflow", "matplotlib", "sklearn", "nltk"})
    assert loaded["sentiment_mlops.train"] == ["sklearn"]  # the probe does see imports
    assert {name: found for name, found in loaded.items() if "mlflow" in found} == {}
    # nltk (over a second to import) loads only when a model marks negations
    assert {name: found for name, found in loaded.items() if "nltk" in found} == {}


def test_the_cli_loads_neither_numpy_nor_mlflow_before_its_callback() -> None:
    """`configure_process` runs in the CLI's callback: after importing the CLI module, but
    before numpy and mlflow load and read their environment. Building the app loads none of
    the heavy libraries either: each command imports what it needs."""
    heavy = {"numpy", "mlflow", "sklearn", "pandas", "scipy", "fastapi", "dask", "sqlalchemy"}
    loaded = loaded_after(["sentiment_mlops.cli"], {*heavy, "typer"})
    assert loaded == {"sentiment_mlops.cli": ["typer"]}


def test_importing_the_registry_sets_no_thread_or_mlflow_variable() -> None:
    """Only `configure_process` sets them (sklearn's import sets KMP_* variables of its own).

    The machine may set some such variables itself (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE
    for older OpenBLAS builds): those given to the new interpreter are expected back as they
    were, and nothing more."""
    prefixes = ("MLFLOW_", "OMP_", "OPENBLAS_")
    code = (
        "import json, os, sentiment_mlops.registry; "
        f"print(json.dumps({{n: v for n, v in os.environ.items() if n.startswith({prefixes})}}))"
    )
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in PROCESS_ENV and not name.startswith("MLFLOW_")
    }
    given = {name: value for name, value in env.items() if name.startswith(prefixes)}
    assert fresh_python(code, env=env) == given


def test_importing_the_app_module_builds_no_app_and_loads_no_mlflow() -> None:
    """uvicorn builds the app through the `create_app` factory; the registry (and so mlflow)
    is imported only when an app starts without a model source of its own."""
    code = (
        "import json, sys, fastapi, sentiment_mlops.serving.app as m; "
        "apps = [k for k, v in vars(m).items() if isinstance(v, fastapi.FastAPI)]; "
        "print(json.dumps([apps, 'mlflow' in sys.modules]))"
    )
    assert fresh_python(code) == [[], False]


MODEL_LIBRARIES = ["sklearn", "skops", "matplotlib", "mlflow.sklearn"]
# The watched packages (or modules, when dotted) that are loaded, from `sys.argv[1:]`.
LOADED = """
def loaded_now():
    names = set(sys.modules) | {m.split(".")[0] for m in sys.modules}
    return sorted(names & set(sys.argv[1:]))
"""


def test_importing_the_registry_loads_no_model_library() -> None:
    """scikit-learn, skops and MLflow's sklearn flavour load when a model is saved or loaded:
    `models list`, `promote` and `rollback` never need them (they cost ~1.5 s a command)."""
    code = f"import json, sys\n{LOADED}\nimport sentiment_mlops.registry\n"
    code += "print(json.dumps(loaded_now()))"
    assert fresh_python(code, *MODEL_LIBRARIES) == []


# Runs the command given as JSON in argv[1]; the watched modules follow.
COMMAND = f"""
import contextlib, io, json, sys
{LOADED}
from sentiment_mlops.cli import app
command = json.loads(sys.argv.pop(1))
with contextlib.redirect_stdout(io.StringIO()) as shown:
    try:
        app(command)
    except SystemExit as exc:
        status = exc.code
print(json.dumps([status, shown.getvalue().strip(), loaded_now()]))
"""
# What `models list` and `predict` read a SQLite or PostgreSQL registry without: MLflow (and
# the alembic migrations its store checks on opening), over 2 s of a command.
STORE_LIBRARIES = ["mlflow", "alembic"]


def run_command(var: Path, command: list[str], watched: list[str]) -> tuple[int, str, list[str]]:
    """`sentiment COMMAND` in a fresh interpreter on the store in `var`: exit status, output,
    and which of `watched` it loaded."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("SENTIMENT_") and name != "MLFLOW_TRACKING_URI"
    }
    env["SENTIMENT_VAR_DIR"] = str(var)
    status, shown, loaded = fresh_python(COMMAND, json.dumps(command), *watched, env=env)
    return status, shown, loaded


def test_listing_models_loads_no_model_library(tmp_path: Path) -> None:
    """The whole command, its error handling included, on an empty store."""
    watched = [*MODEL_LIBRARIES, *STORE_LIBRARIES]
    status, shown, loaded = run_command(tmp_path / "var", ["models", "list"], watched)
    assert (status, shown) == (0, "No registered versions yet; run `sentiment train`.")
    assert loaded == []


def registered(var: Path) -> Path:
    """A store in `var` with one version, champion, of a small default pipeline."""
    from sentiment_mlops.config import Settings, TrainConfig
    from sentiment_mlops.model import build_pipeline
    from sentiment_mlops.registry import Registry

    pipeline = build_pipeline(TrainConfig.model_validate({"vectorizer": {"min_df": 1}}))
    pipeline.fit(["good film", "bad film", "great one", "awful one"] * 3, ["pos", "neg"] * 6)
    Registry(Settings(var_dir=var)).register(pipeline, params={}, metrics={}, tags={})
    return var


def test_reading_a_registry_loads_no_mlflow(tmp_path: Path, clean_env: None) -> None:
    """`models list` reads the versions and `predict` loads the champion (verified) from the
    store's tables and artifact folder: neither imports mlflow, and `predict` needs only
    skops and scikit-learn (skops' import lists every estimator, so loads all of sklearn)."""
    var = registered(tmp_path / "var")
    watched = [*MODEL_LIBRARIES, *STORE_LIBRARIES]
    status, shown, loaded = run_command(var, ["models", "list"], watched)
    assert (status, loaded) == (0, [])
    assert "champion" in shown
    status, shown, loaded = run_command(var, ["predict", "a good film"], watched)
    assert (status, loaded) == (0, ["sklearn", "skops"])
    assert "version 1: pos" in shown
