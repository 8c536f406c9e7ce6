"""The model registry: MLflow runs, registered versions, aliases, and verified loading.

This is the only module that imports mlflow. Everything goes through an explicit
`MlflowClient` bound to the configured store, so two registries never share global state.
A model is saved with skops, its SHA-256 recorded on the model version, and checked again
before any byte of it is deserialised.

Reading tells "there is no such thing" (None, or RegistryError) from "the store cannot say"
(RegistryUnavailable): a database that refuses connections, times out or is locked is never
reported as a missing alias. The database driver gets connect and statement timeouts, and
MLflow's client is only built once the database answers.

skops, scikit-learn and MLflow's model-format modules are imported by the functions that
save and load a model, not here: `sentiment models list`, `promote` and `rollback` only read
and write the store, and importing those cost them about 1.5 s of a 5 s command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import mlflow.artifacts
import sqlalchemy
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
    ErrorCode,
)

from sentiment_mlops.checksums import file_sha256
from sentiment_mlops.config import CHAMPION, Settings
from sentiment_mlops.databases import url_scheme, with_driver_timeouts

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from sentiment_mlops.model import LoadedModel
    from sentiment_mlops.train import TrainResult
    from sentiment_mlops.tuning.search import TrialResult

MODEL_FILE = "model.skops"
REQUIREMENTS_FILE = "requirements.txt"
PYTHON_ENV_FILE = "python_env.yaml"
CONDA_FILE = "conda.yaml"
SHA256_TAG = "sha256"
HISTORY_TAG = "champion_history"
# MLflow's own tag: the UI nests a run under the run it names (a search's trials and refit).
PARENT_TAG = "mlflow.parentRunId"
# MLflow refuses longer tag values; a trial's error is cut to this.
MAX_TAG_CHARS = 5000
LIBRARIES = (
    "scikit-learn",
    "numpy",
    "scipy",
    "pandas",
    "skops",
    "mlflow-skinny",
    "sentiment-mlops",
)
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "file")
_SQLALCHEMY_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_DOES_NOT_EXIST = ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)
_UNAVAILABLE = ErrorCode.Name(TEMPORARILY_UNAVAILABLE)
# What a failed store call raises: MlflowException, or SQLAlchemy's own errors, which escape
# MLflow while it builds its engine.
_STORE_ERRORS = (MlflowException, sqlalchemy.exc.SQLAlchemyError)
# Causes that mean the store could not be reached or did not answer: refused or dropped
# connections, the driver's connect and statement timeouts, a locked database, a full pool,
# and the socket errors under an HTTP store's MlflowException.
_UNREACHABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    ConnectionError,
    TimeoutError,
)


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message says why and what to do."""


class IntegrityError(RegistryError):
    """A model artifact does not match the hash recorded when it was registered."""


class RegistryUnavailable(RegistryError, ConnectionError):
    """The store could not be reached or did not answer in time; the same call may work later.

    Also a `ConnectionError`: that is how the serving model pool, which does not import this
    module (nor so mlflow), tells "unreachable" from a refused version.
    """


@dataclass(frozen=True)
class SearchRun:
    """The MLflow run of a hyperparameter search, which its trials' runs name as parent."""

    run_id: str
    experiment_id: str


@dataclass(frozen=True)
class VersionInfo:
    """One registered version, as `sentiment models list` shows it."""

    version: int
    aliases: list[str]
    created: datetime
    run_id: str
    sha256: str
    metrics: dict[str, float]
    data_source: str


def environment_tags() -> dict[str, str]:
    """Git commit and library versions, so a run can be reproduced later."""
    tags = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            tags[f"lib.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            tags[f"lib.{name}"] = "not installed"
    tags["git_commit"] = _git("rev-parse", "HEAD") or "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no")
    tags["git_dirty"] = "unknown" if status is None else str(bool(status)).lower()
    return tags


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


class Registry:
    """Runs and versions of one registered model in one MLflow store."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.name = settings.model_name
        self.tracking_uri = settings.tracking_uri()
        self._store_uri = with_driver_timeouts(self.tracking_uri, settings.registry_timeout_seconds)
        self._artifact_location = settings.artifact_location()
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self._client: MlflowClient | None = None
        self._connecting = threading.Lock()

    def __reduce__(self) -> tuple[type[Registry], tuple[Settings]]:
        """Pickled as its settings (a client and its connections do not travel), so another
        process, such as the serving model loader, opens the same store."""
        return (Registry, (self._settings,))

    @property
    def client(self) -> MlflowClient:
        """MLflow's client for the store, built on first use: building a `Registry` never
        waits for the store, so a server can start while its database is down."""
        with self._connecting:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> MlflowClient:
        """Check that a database store answers, then build MLflow's client over it.

        MLflow creates its SQLAlchemy engine in `MlflowClient()` (and again for the registry
        on first use) through `create_sqlalchemy_engine_with_retry`, which retries a refused
        connection 10 times over ~100 s, writing a warning each time, before raising. One
        connection attempt of our own, with the driver's timeouts, fails in milliseconds.
        """
        if url_scheme(self._store_uri) in _SQLALCHEMY_SCHEMES:
            engine = sqlalchemy.create_engine(self._store_uri, poolclass=sqlalchemy.pool.NullPool)
            try:
                engine.connect().close()
            except sqlalchemy.exc.SQLAlchemyError as exc:
                raise _failure(exc, "cannot connect to the registry") from exc
            finally:
                engine.dispose()
        try:
            return MlflowClient(tracking_uri=self._store_uri, registry_uri=self._store_uri)
        except _STORE_ERRORS as exc:
            raise _failure(exc, "cannot open the registry") from exc

    # -- writing -----------------------------------------------------------------------------

    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.name)
        if experiment is not None:
            return str(experiment.experiment_id)
        location = None
        if url_scheme(self.tracking_uri) in _DATABASE_SCHEMES:
            self._artifact_location.mkdir(parents=True, exist_ok=True)
            location = self._artifact_location.as_uri()
        try:
            return str(self.client.create_experiment(self.name, artifact_location=location))
        except MlflowException:  # created concurrently by another process
            experiment = self.client.get_experiment_by_name(self.name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)

    def _ensure_registered_model(self) -> None:
        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            try:
                self.client.create_registered_model(self.name)
            except MlflowException:
                self.client.get_registered_model(self.name)

    def register(
        self,
        pipeline: Pipeline,
        *,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
        artifacts: Path | None = None,
        alias: str | None = None,
        champion_if_first: bool = True,
    ) -> VersionInfo:
        """Log a finished training run and register its model as a new version.

        All or nothing: the model is saved and hashed before the store is touched, and if any
        later step fails (or the process is interrupted), the model version and the run are
        deleted before the error propagates. The first version of the model becomes
        `champion` unless `champion_if_first` is false (a tuned model never promotes itself).
        """
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = Path(tmp) / "model"
            _save_model(pipeline, model_dir)
            version = self._log_and_register(
                model_dir, params, metrics, tags, artifacts, alias, champion_if_first
            )
        return self.version(version)

    def _log_and_register(
        self,
        model_dir: Path,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
        artifacts: Path | None,
        alias: str | None,
        champion_if_first: bool,
    ) -> int:
        sha256 = file_sha256(model_dir / MODEL_FILE)
        self._ensure_registered_model()
        run = self.client.create_run(
            self._experiment_id(), tags={**environment_tags(), **tags, SHA256_TAG: sha256}
        )
        run_id = run.info.run_id
        version: str | None = None
        try:
            now = int(datetime.now(UTC).timestamp() * 1000)
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                params=[Param(k, _param_value(v)) for k, v in params.items()],
            )
            if artifacts is not None:
                self.client.log_artifacts(run_id, str(artifacts))
            self.client.log_artifacts(run_id, str(model_dir), "model")
            created = self.client.create_model_version(
                self.name,
                source=f"{run.info.artifact_uri}/model",
                run_id=run_id,
                tags={SHA256_TAG: sha256, "data_source": tags.get("data_source", "")},
            )
            version = str(created.version)
            if champion_if_first and self.resolve(CHAMPION) is None:  # no history to keep
                self.client.set_registered_model_alias(self.name, CHAMPION, version)
            if alias is not None:
                self.promote(int(version), alias)
            self.client.set_terminated(run_id, "FINISHED")
        except BaseException:
            self._undo(run_id, version)
            raise
        return int(version)

    def register_training(
        self,
        result: TrainResult,
        alias: str | None = None,
        *,
        search: SearchRun | None = None,
    ) -> VersionInfo:
        """Record a training result as a run (params, metrics, data fingerprints, the report,
        its plots and the config) and register its model; all or nothing, as `register`.

        With `search`, the run is the search's refit of its best trial: a child of the
        search's run, and never made `champion` by being the first version.
        """
        tags = dict(result.tags)
        if search is not None:
            tags.update({PARENT_TAG: search.run_id, "mlflow.runName": "refit-best"})
        with tempfile.TemporaryDirectory() as tmp:
            report_dir = Path(tmp) / "evaluation"
            result.write_artifacts(report_dir)
            return self.register(
                result.pipeline,
                params=result.params,
                metrics=result.metrics,
                tags=tags,
                artifacts=report_dir,
                alias=alias,
                champion_if_first=search is None,
            )

    # -- searches ----------------------------------------------------------------------------

    def start_search(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> SearchRun:
        """Open the run of a hyperparameter search; its trials become child runs as they
        finish (`log_trial`), and `end_search` closes it."""
        experiment_id = self._experiment_id()
        run = self.client.create_run(experiment_id, tags={**environment_tags(), **tags})
        search = SearchRun(run.info.run_id, experiment_id)
        try:
            self.client.log_batch(
                search.run_id, params=[Param(k, _param_value(v)) for k, v in params.items()]
            )
        except BaseException:
            self.end_search(search, "FAILED")
            raise
        return search

    def log_trial(self, search: SearchRun, trial: TrialResult) -> str:
        """One finished trial as a child run of the search: its config, CV scores, time and
        workers, FINISHED; or FAILED with its error in the `error` tag. Returns the run id."""
        tags = {k: v[:MAX_TAG_CHARS] for k, v in trial.tags.items()}
        run = self.client.create_run(
            search.experiment_id,
            tags={**tags, PARENT_TAG: search.run_id},
            run_name=f"trial-{trial.number}",
        )
        now = int(datetime.now(UTC).timestamp() * 1000)
        self.client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in trial.metrics.items()],
            params=[Param(k, _param_value(v)) for k, v in trial.params.items()],
        )
        self.client.set_terminated(run.info.run_id, "FINISHED" if trial.ok else "FAILED")
        return str(run.info.run_id)

    def end_search(
        self,
        search: SearchRun,
        status: Literal["FINISHED", "FAILED", "KILLED"],
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Close the search's run: FINISHED with its summary, FAILED, or KILLED (Ctrl-C)."""
        now = int(datetime.now(UTC).timestamp() * 1000)
        self.client.log_batch(
            search.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            tags=[RunTag(k, v[:MAX_TAG_CHARS]) for k, v in (tags or {}).items()],
        )
        self.client.set_terminated(search.run_id, status)

    def _undo(self, run_id: str, version: str | None) -> None:
        if version is not None:
            with contextlib.suppress(MlflowException):
                self.client.delete_model_version(self.name, version)
        with contextlib.suppress(MlflowException):
            self.client.set_terminated(run_id, "FAILED")
            self.client.delete_run(run_id)

    def promote(self, version: int, alias: str) -> None:
        """Point `alias` at `version`; a replaced champion is remembered for rollback."""
        self.version(version)
        if alias == CHAMPION:
            current = self.resolve(CHAMPION)
            if current is not None and current != version:
                self._set_history([*self._history(), current])
        self.client.set_registered_model_alias(self.name, alias, str(version))

    def rollback(self) -> int:
        """Give `champion` back to the version that held it before the last promotion."""
        history = self._history()
        while history:
            previous = history.pop()
            try:
                self.version(previous)
            except RegistryError:
                continue  # deleted since; fall back further
            self.client.set_registered_model_alias(self.name, CHAMPION, str(previous))
            self._set_history(history)
            return previous
        raise RegistryError(
            f"no previous champion of '{self.name}' to roll back to; "
            "promote a version explicitly with `sentiment models promote VERSION`"
        )

    def _history(self) -> list[int]:
        try:
            model = self.client.get_registered_model(self.name)
        except _STORE_ERRORS as exc:
            if _does_not_exist(exc):
                return []
            raise _failure(exc, "cannot read the champion history") from exc
        return [int(v) for v in json.loads(model.tags.get(HISTORY_TAG, "[]"))]

    def _set_history(self, history: list[int]) -> None:
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history))

    # -- reading -----------------------------------------------------------------------------

    def resolve(self, alias: str) -> int | None:
        """The version an alias points at, or None when the alias (or model) does not exist.

        RegistryUnavailable when the store cannot be reached or does not answer in time.
        (The aliases are read from the registered model: a missing alias is then a missing
        key, where `get_model_version_by_alias` raises the same error code as a bad name.)
        """
        try:
            aliases = self.client.get_registered_model(self.name).aliases
        except _STORE_ERRORS as exc:
            if _does_not_exist(exc):
                return None
            raise _failure(exc, f"cannot resolve alias '{alias}'") from exc
        version = aliases.get(alias)
        return None if version is None else int(version)

    def version(self, version: int) -> VersionInfo:
        """Details of one version; RegistryError if it does not exist."""
        return self._info(self._model_version(version))

    def _model_version(self, version: int) -> Any:
        try:
            return self.client.get_model_version(self.name, str(version))
        except _STORE_ERRORS as exc:
            if _does_not_exist(exc):
                raise RegistryError(f"model '{self.name}' has no version {version}") from exc
            raise _failure(exc, f"cannot read version {version}") from exc

    def versions(self) -> list[VersionInfo]:
        """All versions, newest first."""
        try:
            found = self.client.search_model_versions(f"name='{self.name}'")
            aliases = self.client.get_registered_model(self.name).aliases
        except _STORE_ERRORS as exc:
            if _does_not_exist(exc):
                return []
            raise _failure(exc, "cannot list versions") from exc
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        infos = (self._info(mv, by_version.get(str(mv.version), [])) for mv in found)
        return sorted(infos, key=lambda v: -v.version)

    def _info(self, mv: Any, aliases: list[str] | None = None) -> VersionInfo:
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = dict(self.client.get_run(mv.run_id).data.metrics)
            except _STORE_ERRORS as exc:
                if not _does_not_exist(exc):
                    raise _failure(exc, f"cannot read run {mv.run_id}") from exc
        return VersionInfo(
            version=int(mv.version),
            aliases=sorted(aliases if aliases is not None else mv.aliases or []),
            created=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC),
            run_id=mv.run_id or "",
            sha256=mv.tags.get(SHA256_TAG, ""),
            metrics=metrics,
            data_source=mv.tags.get("data_source", ""),
        )

    def load(self, ref: str | int = CHAMPION) -> LoadedModel:
        """Download, verify and deserialise a version given by alias or number.

        The hash is checked before skops reads the file, and skops refuses any type outside
        its trusted set, so a tampered or foreign artifact never executes code.
        """
        from sentiment_mlops.model import LoadedModel

        if isinstance(ref, int) or ref.isdigit():
            version = int(ref)
        else:
            resolved = self.resolve(ref)
            if resolved is None:
                raise RegistryError(
                    f"model '{self.name}' has no version with alias '{ref}'; "
                    "train one (`sentiment train`) or promote one (`sentiment models promote`)"
                )
            version = resolved
        mv = self._model_version(version)
        expected = mv.tags.get(SHA256_TAG, "")
        if not expected:
            raise IntegrityError(f"version {version} of '{self.name}' has no recorded sha256")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{mv.source}/{MODEL_FILE}",
                    dst_path=tmp,
                    tracking_uri=self._store_uri,
                )
            except (MlflowException, OSError) as exc:
                raise RegistryError(
                    f"cannot fetch the artifact of version {version} from {mv.source}: {exc}"
                ) from exc
            path = Path(local)
            actual = file_sha256(path)
            if actual != expected:
                raise IntegrityError(
                    f"refusing to load version {version} of '{self.name}': artifact sha256 "
                    f"{actual} does not match the registered {expected} (tampered or corrupt)"
                )
            pipeline = _load_model(path)
        return LoadedModel(pipeline, version, expected, mv.run_id or "")


def _does_not_exist(exc: BaseException) -> bool:
    return isinstance(exc, MlflowException) and exc.error_code == _DOES_NOT_EXIST


def _failure(exc: BaseException, doing: str) -> RegistryError:
    """The error to raise for a failed store call: RegistryUnavailable when `exc`, or what
    caused it, says the store could not be reached or did not answer; else RegistryError."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for cause in chain:
        if isinstance(cause, _UNREACHABLE):
            return RegistryUnavailable(f"registry unreachable: {_first_line(cause)}")
    for cause in chain:
        if isinstance(cause, MlflowException) and cause.error_code == _UNAVAILABLE:
            return RegistryUnavailable(f"registry unreachable: {_first_line(cause)}")
    return RegistryError(f"{doing}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    """The first line of the driver's own message (SQLAlchemy adds a prefix and a link)."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = str(exc.message if isinstance(exc, MlflowException) else exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)


def _save_model(pipeline: Pipeline, directory: Path) -> None:
    """The model as compressed skops, described by MLflow's sklearn flavour files.

    `mlflow.sklearn.load_model("models:/sentiment@champion")` reads the result. It is written
    here rather than by `mlflow.sklearn.save_model`, which serialises the model itself,
    uncompressed (about 20x larger), and loads it back to check it: with our compressed copy,
    three passes over SST-2's 74k-term vocabulary took ~8 s; one dump and a type audit ~4 s.
    Like it, this refuses a pipeline holding types outside skops' trusted set, which could
    not be loaded again.
    """
    import sklearn
    import skops.io
    from mlflow.models import Model
    from mlflow.models.signature import ModelSignature
    from mlflow.pyfunc import add_to_model
    from mlflow.types.schema import ColSpec, Schema

    directory.mkdir(parents=True)
    path = directory / MODEL_FILE
    skops.io.dump(pipeline, path, compression=zipfile.ZIP_DEFLATED, compresslevel=1)
    untrusted = _untrusted_types(path)
    if untrusted:
        raise RegistryError(
            f"cannot register this pipeline: it holds types outside skops' trusted set "
            f"({', '.join(untrusted)}), so it could not be loaded again"
        )
    text = Schema([ColSpec("string")])
    model = Model(signature=ModelSignature(inputs=text, outputs=text))
    add_to_model(
        model,
        loader_module="mlflow.sklearn",
        model_path=MODEL_FILE,
        conda_env=CONDA_FILE,
        python_env=PYTHON_ENV_FILE,
        predict_fn="predict",
    )
    model.add_flavor(
        "sklearn",
        pickled_model=MODEL_FILE,
        sklearn_version=sklearn.__version__,
        serialization_format="skops",
        code=None,
        # The project's own types in this file, so that mlflow.sklearn.load_model (with this
        # package installed) loads it too.
        skops_trusted_types=skops.io.get_untrusted_types(file=path) or None,
    )
    model.model_size_bytes = path.stat().st_size
    model.save(str(directory / "MLmodel"))
    requirements = [
        f"mlflow=={mlflow.__version__}",
        *(f"{name}=={metadata.version(name)}" for name in ("scikit-learn", "skops")),
    ]
    (directory / REQUIREMENTS_FILE).write_text("\n".join(requirements), encoding="utf-8")
    python = platform.python_version()
    environments = {
        PYTHON_ENV_FILE: {
            "python": python,
            "build_dependencies": ["pip", "setuptools", "wheel"],
            "dependencies": [f"-r {REQUIREMENTS_FILE}"],
        },
        CONDA_FILE: {
            "name": "mlflow-env",
            "channels": ["conda-forge"],
            "dependencies": [f"python={python}", "pip", {"pip": requirements}],
        },
    }
    for name, content in environments.items():
        (directory / name).write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")


def _untrusted_types(path: Path) -> list[str]:
    """Types in a skops file outside skops' trusted set and the project's own
    (`model.TRUSTED_TYPES`): a file holding any of them is neither saved nor loaded."""
    import skops.io

    from sentiment_mlops.model import TRUSTED_TYPES

    return [name for name in skops.io.get_untrusted_types(file=path) if name not in TRUSTED_TYPES]


def _load_model(path: Path) -> Pipeline:
    import skops.io
    from sklearn.pipeline import Pipeline

    from sentiment_mlops.model import TRUSTED_TYPES

    untrusted = _untrusted_types(path)
    if untrusted:
        raise IntegrityError(
            f"refusing to load {path.name}: it contains types outside the trusted set: "
            f"{', '.join(untrusted)}"
        )
    model = skops.io.load(path, trusted=list(TRUSTED_TYPES))
    if not isinstance(model, Pipeline):
        raise IntegrityError(f"{path.name} holds a {type(model).__name__}, not a Pipeline")
    return model
