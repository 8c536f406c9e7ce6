"""The model registry: MLflow runs, registered versions, aliases, and verified loading.

This is the only module that imports mlflow. Everything written goes through an explicit
`MlflowClient` bound to the configured store, so two registries never share global state.
A model is saved with skops, its SHA-256 recorded on the model version, and checked again
before any byte of it is deserialised.

Reading tells "there is no such thing" (None, or RegistryError) from "the store cannot say"
(RegistryUnavailable): a database that refuses connections, times out or is locked is never
reported as a missing alias. The database driver gets connect and statement timeouts, and
MLflow's client is only built once the database answers.

mlflow itself, skops and scikit-learn are imported by the methods that need them, not here:
importing mlflow costs 1.3 s or more, and `sentiment models list` and `sentiment predict` need
none of it on a database store (see "reading").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlparse
from urllib.request import url2pathname

import sqlalchemy

from sentiment_mlops import model_files, registry_tables
from sentiment_mlops.checksums import file_sha256
from sentiment_mlops.config import CHAMPION, Settings
from sentiment_mlops.databases import url_scheme, with_driver_timeouts

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from sklearn.pipeline import Pipeline

    from sentiment_mlops.model import LoadedModel
    from sentiment_mlops.train import TrainResult
    from sentiment_mlops.tuning.search import TrialResult

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
# MLflow's error codes (the names of its protobuf `ErrorCode` values) that this module acts on.
_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"
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
    source: str


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
        self._sqlite_file = _sqlite_file(self.tracking_uri)
        if self._sqlite_file is not None:
            self._sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self._client: MlflowClient | None = None
        self._engine: sqlalchemy.Engine | None = None
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

        `MlflowClient()` builds the tracking store, which on a database without MLflow's
        tables creates them all (the model registry's too) and runs every Alembic migration,
        ~2 s on SQLite, not in one transaction. Two processes doing so at once break each
        other and can leave the file unusable (`table _alembic_tmp_experiments already
        exists`), so on a SQLite file the client is built under `_store_lock`: the first
        process creates the store, the others wait and find it ready. The store is cached for
        the process, so the registry store, built later, finds every table there.
        """
        from mlflow import MlflowClient

        if url_scheme(self._store_uri) in _SQLALCHEMY_SCHEMES:
            engine = sqlalchemy.create_engine(self._store_uri, poolclass=sqlalchemy.pool.NullPool)
            try:
                engine.connect().close()
            except sqlalchemy.exc.SQLAlchemyError as exc:
                raise _failure(exc, "cannot connect to the registry") from exc
            finally:
                engine.dispose()
        with _store_lock(self._sqlite_file):
            try:
                return MlflowClient(tracking_uri=self._store_uri, registry_uri=self._store_uri)
            except _store_errors() as exc:
                raise _failure(exc, "cannot open the registry") from exc

    # -- writing -----------------------------------------------------------------------------

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

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
        from mlflow.exceptions import MlflowException

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
            model_files.save(pipeline, model_dir)
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
        from mlflow.entities import Metric, Param

        sha256 = file_sha256(model_dir / model_files.MODEL_FILE)
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
        from mlflow.entities import Param

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
        from mlflow.entities import Metric, Param

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
        from mlflow.entities import Metric, RunTag

        now = int(datetime.now(UTC).timestamp() * 1000)
        self.client.log_batch(
            search.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            tags=[RunTag(k, v[:MAX_TAG_CHARS]) for k, v in (tags or {}).items()],
        )
        self.client.set_terminated(search.run_id, status)

    def _undo(self, run_id: str, version: str | None) -> None:
        from mlflow.exceptions import MlflowException

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
        except _store_errors() as exc:
            if _does_not_exist(exc):
                return []
            raise _failure(exc, "cannot read the champion history") from exc
        return [int(v) for v in json.loads(model.tags.get(HISTORY_TAG, "[]"))]

    def _set_history(self, history: list[int]) -> None:
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history))

    # -- reading -----------------------------------------------------------------------------
    #
    # A database store's tables are read by SQL (registry_tables.py), with no `import mlflow`
    # and no MLflow client; other stores through MLflow's client. Both give the same answers
    # (tests/registry_reads.py compares them).

    @property
    def _tables(self) -> sqlalchemy.Engine | None:
        """The engine that reads a database store's tables (None for other stores), built on
        first use with the driver's timeouts."""
        if url_scheme(self._store_uri) not in _SQLALCHEMY_SCHEMES:
            return None
        with self._connecting:
            if self._engine is None:
                # Pre-ping: a pooled connection the server has since closed is replaced,
                # so a read says why the database is down now, not that it once dropped us.
                self._engine = sqlalchemy.create_engine(self._store_uri, pool_pre_ping=True)
            return self._engine

    def _read(self, doing: str, query: Callable[[sqlalchemy.Connection], _T]) -> _T | None:
        """`query` on a connection to the store's tables; None when MLflow has not created
        them yet (a store nothing was written to). RegistryUnavailable when the database
        cannot be reached or does not answer in time."""
        engine = self._tables
        assert engine is not None
        try:
            with engine.connect() as connection:
                if not sqlalchemy.inspect(connection).has_table("model_versions"):
                    return None
                return query(connection)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise _failure(exc, doing) from exc

    def resolve(self, alias: str) -> int | None:
        """The version an alias points at, or None when the alias (or model) does not exist.

        RegistryUnavailable when the store cannot be reached or does not answer in time.
        (Through the client, the aliases are read from the registered model: a missing alias
        is then a missing key, where `get_model_version_by_alias` raises the same error code
        as a bad name.)
        """
        if self._tables is not None:
            aliases = self._read(
                f"cannot resolve alias '{alias}'", lambda c: registry_tables.aliases(c, self.name)
            )
            return (aliases or {}).get(alias)
        try:
            found = self.client.get_registered_model(self.name).aliases
        except _store_errors() as exc:
            if _does_not_exist(exc):
                return None
            raise _failure(exc, f"cannot resolve alias '{alias}'") from exc
        version = found.get(alias)
        return None if version is None else int(version)

    def version(self, version: int) -> VersionInfo:
        """Details of one version; RegistryError if it does not exist."""
        if self._tables is not None:
            found = self._read(
                f"cannot read version {version}",
                lambda c: registry_tables.versions(c, self.name, version),
            )
            if not found:
                raise RegistryError(f"model '{self.name}' has no version {version}")
            return _from_row(found[0])
        try:
            mv = self.client.get_model_version(self.name, str(version))
        except _store_errors() as exc:
            if _does_not_exist(exc):
                raise RegistryError(f"model '{self.name}' has no version {version}") from exc
            raise _failure(exc, f"cannot read version {version}") from exc
        return self._info(mv)

    def versions(self) -> list[VersionInfo]:
        """All versions, newest first."""
        if self._tables is not None:
            rows = self._read(
                "cannot list versions", lambda c: registry_tables.versions(c, self.name)
            )
            return [_from_row(row) for row in rows or []]
        try:
            model_versions = self.client.search_model_versions(f"name='{self.name}'")
            aliases = self.client.get_registered_model(self.name).aliases
        except _store_errors() as exc:
            if _does_not_exist(exc):
                return []
            raise _failure(exc, "cannot list versions") from exc
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        infos = (self._info(mv, by_version.get(str(mv.version), [])) for mv in model_versions)
        return sorted(infos, key=lambda v: -v.version)

    def _info(self, mv: Any, aliases: list[str] | None = None) -> VersionInfo:
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = dict(self.client.get_run(mv.run_id).data.metrics)
            except _store_errors() as exc:
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
            source=mv.source or "",
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
        info = self.version(version)
        if not info.sha256:
            raise IntegrityError(f"version {version} of '{self.name}' has no recorded sha256")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self._download(f"{info.source}/{model_files.MODEL_FILE}", Path(tmp))
            except _fetch_errors() as exc:
                raise RegistryError(
                    f"cannot fetch the artifact of version {version} from {info.source}: {exc}"
                ) from exc
            actual = file_sha256(path)
            if actual != info.sha256:
                raise IntegrityError(
                    f"refusing to load version {version} of '{self.name}': artifact sha256 "
                    f"{actual} does not match the registered {info.sha256} (tampered or corrupt)"
                )
            pipeline = model_files.load(path)
        return LoadedModel(pipeline, version, info.sha256, info.run_id)

    def _download(self, uri: str, folder: Path) -> Path:
        """A copy of the artifact at `uri` in `folder`, where nobody else writes: what is
        verified is what is loaded. A `file:` URI (a database store's artifacts) is copied
        as MLflow would copy it, without importing mlflow; other URIs are MLflow's to fetch."""
        if urlparse(uri).scheme == "file":
            copy = folder / Path(uri).name
            shutil.copyfile(url2pathname(urlparse(uri).path), copy)
            return copy
        import mlflow.artifacts

        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(folder), tracking_uri=self._store_uri
            )
        )


_T = TypeVar("_T")


def _sqlite_file(uri: str) -> Path | None:
    """The file a `sqlite:///` store URI names; None for other stores and in-memory SQLite."""
    if url_scheme(uri) != "sqlite":
        return None
    database = sqlalchemy.engine.make_url(uri).database
    return Path(database) if database and database != ":memory:" else None


@contextlib.contextmanager
def _store_lock(database: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on `<database>.lock` (fcntl's, released by the kernel if the
    process dies), so processes opening the same SQLite store take turns; nothing to hold
    for other stores. A waiter waits for one `MlflowClient()`: ~2 s while it creates the
    store, milliseconds once the store exists."""
    if database is None:
        yield
        return
    path = database.with_name(database.name + ".lock")
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise RegistryError(f"cannot open the registry's lock file {path}: {exc}") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def _from_row(row: registry_tables.VersionRow) -> VersionInfo:
    return VersionInfo(
        version=row.version,
        aliases=row.aliases,
        created=row.created,
        run_id=row.run_id,
        sha256=row.tags.get(SHA256_TAG, ""),
        metrics=row.metrics,
        data_source=row.tags.get("data_source", ""),
        source=row.source,
    )


def _mlflow_errors() -> tuple[type[Exception], ...]:
    """(MlflowException,) once mlflow is imported, else (): none of its errors can exist
    before, and importing it (over a second) only to rule one out would undo the lazy imports.
    Meant for `except` clauses, which are evaluated only when something was raised."""
    module = sys.modules.get("mlflow.exceptions")
    return () if module is None else (module.MlflowException,)


def _store_errors() -> tuple[type[Exception], ...]:
    """What a failed store call raises: SQLAlchemy's errors (our reads, and MLflow's while it
    builds its engine) or MlflowException."""
    return (sqlalchemy.exc.SQLAlchemyError, *_mlflow_errors())


def _fetch_errors() -> tuple[type[Exception], ...]:
    """What fetching an artifact raises: OSError (a local copy) or MlflowException."""
    return (OSError, *_mlflow_errors())


def _error_code(exc: BaseException) -> str | None:
    """MLflow's error code of `exc`, None when it is not an MlflowException."""
    return getattr(exc, "error_code", None) if isinstance(exc, _mlflow_errors()) else None


def _does_not_exist(exc: BaseException) -> bool:
    return _error_code(exc) == _DOES_NOT_EXIST


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
        if _error_code(cause) == _UNAVAILABLE:
            return RegistryUnavailable(f"registry unreachable: {_first_line(cause)}")
    return RegistryError(f"{doing}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    """The first line of the driver's own message (SQLAlchemy adds a prefix and a link)."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = str(getattr(exc, "message", exc) if isinstance(exc, _mlflow_errors()) else exc)
    text = text.strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)
