"""The `sentiment` command: parses arguments, calls the stages, prints tables.

Thin on purpose: every behaviour lives in a module that tests can call directly. Importing
it loads neither numpy nor mlflow, so `configure_process` (run before every subcommand)
sets their environment before they read it.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from sentiment_mlops.config import (
    CHALLENGER,
    CHAMPION,
    DEFAULT_MDE,
    ConfigError,
    FeaturesConfig,
    Settings,
    TrainConfig,
    load_train_config,
)
from sentiment_mlops.runtime import (
    Terminated,
    configure_process,
    sigterm_raises,
    skip_collection_at_exit,
)

if TYPE_CHECKING:
    from sentiment_mlops.data import Split
    from sentiment_mlops.registry import Registry, SearchRun, VersionInfo
    from sentiment_mlops.train import DataSpec, TrainResult
    from sentiment_mlops.tuning.search import TrialResult
    from sentiment_mlops.tuning.space import Trial, TuneConfig

app = typer.Typer(help="Train, version and serve a sentiment classifier.", no_args_is_help=True)
models_app = typer.Typer(help="Registered model versions and their aliases.", no_args_is_help=True)
datasets_app = typer.Typer(help="Public datasets to train on.", no_args_is_help=True)
token_app = typer.Typer(help="Access tokens and OAuth2 clients for the API.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")
app.add_typer(token_app, name="token")
ab_app = typer.Typer(help="A/B experiments, read from the prediction log.", no_args_is_help=True)
app.add_typer(ab_app, name="ab")
features_app = typer.Typer(
    help="The feature store (the `features` extra): entity features for training and serving.",
    no_args_is_help=True,
)
app.add_typer(features_app, name="features")

# Piped output (CI logs, files) gets room for the tables instead of rich's 80-column default.
_WIDTH = None if sys.stdout.isatty() else 120
out = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)


@contextmanager
def _user_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Turn expected failures into a one-line message and exit status 1, not a traceback.

    Without `kinds`, the data, config, registry and dataset errors of training. Other commands
    name theirs: importing the data modules costs a second (pandas, scikit-learn), and the
    registry commands (`_registry_errors`) need none of them.
    """
    if not kinds:
        from sentiment_mlops.data import DataError
        from sentiment_mlops.datasets import DatasetError
        from sentiment_mlops.registry import RegistryError

        kinds = (DataError, ConfigError, RegistryError, DatasetError)
    try:
        yield
    except kinds as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc


@app.callback()
def _process() -> None:
    """Runs before every subcommand: thread and telemetry settings, a faster exit, and the
    `SENTIMENT_*` settings checked once, so an invalid one is one line naming the variable
    (exit 2, its value never shown: it may be a secret) in every command, not a traceback."""
    configure_process()
    skip_collection_at_exit()
    from pydantic import ValidationError

    from sentiment_mlops.config import describe_settings_error

    try:
        Settings()
    except ValidationError as exc:
        err.print(
            f"[bold red]error:[/] invalid setting: {describe_settings_error(exc)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from None


def _registry_errors() -> AbstractContextManager[None]:
    """`_user_errors` for the commands that only talk to the registry."""
    from sentiment_mlops.registry import RegistryError

    return _user_errors(RegistryError)


def _registry() -> Registry:
    from sentiment_mlops.registry import Registry

    return Registry(Settings())


def _train_and_register(
    spec: DataSpec, config: TrainConfig, registry: Registry | None, alias: str | None
) -> tuple[TrainResult, VersionInfo]:
    """Load, fit and register, showing progress on stderr.

    The store is opened (`registry` None) only once there is a model to register: bad data
    fails in a second, before MLflow is even imported, and leaves no store behind.
    """
    from sentiment_mlops.train import fit, load_split

    with err.status(f"Loading {spec.describe()}"):
        if config.needs_context:
            from sentiment_mlops.features.training import load_context_split

            settings = Settings()
            split = load_context_split(spec.path, config, settings)
            if config.features.enabled and settings.subject_key is None:
                err.print(
                    "[yellow]warning:[/] authors are keyed with the generated subject key "
                    f"{settings.subject_key_file()}: a server finds their histories only if it "
                    "hashes users with the same key (SENTIMENT_SUBJECT_KEY)",
                    soft_wrap=True,
                )
        else:
            split = load_split(spec, config)
    err.print(
        f"Data: {len(split.train)} training rows, {len(split.test)} test rows, "
        f"classes {', '.join(split.train.classes)}"
    )
    for warning in split.train.warnings:
        err.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    err.print("Fitting TF-IDF + logistic regression")
    with err.status("Fitting"):
        result = fit(split, config, spec)
    err.print(f"Fitted in {result.fit_seconds:.1f} s")
    with err.status("Logging and registering the model"):
        version = (registry or _registry()).register_training(result, alias)
    return result, version


def _data_spec(spec: DataSpec) -> DataSpec:
    """`spec` with the training limits of the `SENTIMENT_*` settings."""
    settings = Settings()
    return replace(
        spec, max_classes=settings.max_classes, max_text_chars=settings.train_text_limit()
    )


# The data options `train` and `tune` share.
DataFile = Annotated[
    Path | None, typer.Option(help="CSV, JSONL or Parquet file; default: built-in tweets")
]
TestDataFile = Annotated[
    Path | None, typer.Option(help="Held-out file; default: a stratified split of --data")
]
TextColumn = Annotated[str, typer.Option(help="Column holding the text")]
LabelColumn = Annotated[str, typer.Option(help="Column holding the label")]
Encoding = Annotated[str, typer.Option(help="Text encoding of CSV/JSONL files")]


def with_feature_options(
    config: TrainConfig, features: bool | None, split: Literal["random", "time"] | None
) -> TrainConfig:
    """The config with `--features` and `--split` applied where given."""
    section = config.features.model_dump()
    if features is not None:
        section["enabled"] = features
    if split is not None:
        section["split"] = split
    return config.model_copy(update={"features": FeaturesConfig.model_validate(section)})


@app.command()
def train(
    data: DataFile = None,
    test_data: TestDataFile = None,
    text_column: TextColumn = "text",
    label_column: LabelColumn = "label",
    encoding: Encoding = "utf-8",
    config: Annotated[
        Path | None, typer.Option(help="Training config; default: configs/train.yaml")
    ] = None,
    alias: Annotated[
        str | None, typer.Option(help="Alias for the new version, e.g. challenger")
    ] = None,
    if_no_champion: Annotated[
        bool, typer.Option("--if-no-champion", help="Do nothing if a champion is registered")
    ] = False,
    features: Annotated[
        bool | None,
        typer.Option(
            "--features/--no-features",
            help="Add the author's and account's entity features from the feature store "
            "(needs the `features` extra and --data with context columns); default: config",
        ),
    ] = None,
    split: Annotated[
        Literal["random", "time"] | None,
        typer.Option(
            help="random (stratified) or time (test on the latest events); default: config"
        ),
    ] = None,
    validation_data: Annotated[
        Path | None,
        typer.Option(
            help="Labelled rows like those the model will score, to fit the probability "
            "calibrator on instead of CV folds of --data (needs calibration.method)"
        ),
    ] = None,
) -> None:
    """Train on a dataset, evaluate, and register the model as a new version."""
    from sentiment_mlops.evaluate import print_report
    from sentiment_mlops.train import DataSpec

    with sigterm_raises(), _user_errors():
        registry = _registry() if if_no_champion else None
        if registry is not None and (current := registry.resolve(CHAMPION)) is not None:
            out.print(f"Champion is version {current}; not training (drop --if-no-champion).")
            return
        train_config = with_feature_options(load_train_config(config), features, split)
        spec = _data_spec(
            DataSpec(data, test_data, text_column, label_column, encoding, validation_data)
        )
        result, version = _train_and_register(spec, train_config, registry, alias)
    print_report(result.report, out)
    aliases = f" ({', '.join(version.aliases)})" if version.aliases else ""
    out.print(f"Registered version {version.version}{aliases}, sha256 {version.sha256[:12]}…")


@app.command()
def tune(
    data: DataFile = None,
    test_data: TestDataFile = None,
    text_column: TextColumn = "text",
    label_column: LabelColumn = "label",
    encoding: Encoding = "utf-8",
    config: Annotated[
        Path | None, typer.Option(help="Search config; default: configs/tune.yaml")
    ] = None,
    train_config: Annotated[
        Path | None,
        typer.Option(help="Training config the search starts from; default: configs/train.yaml"),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler, e.g. tcp://host:8786; default: a local cluster"),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes of the local cluster; default: cores")
    ] = None,
    budget: Annotated[
        int | None, typer.Option(min=1, help="Trials at most (overrides the config's budget)")
    ] = None,
    promote_if_better: Annotated[
        bool,
        typer.Option(
            "--promote-if-better",
            help="Make the result champion if it beats the champion on the test set "
            "(McNemar exact test, p < 0.05)",
        ),
    ] = False,
) -> None:
    """Search hyperparameters with cross-validation on Dask; refit the best on all training
    data and register it as `challenger`."""
    from sentiment_mlops.train import DataSpec, load_split
    from sentiment_mlops.tuning.search import TuneError, check_folds
    from sentiment_mlops.tuning.space import (
        DEFAULT_TUNE_CONFIG,
        check_space,
        expand,
        load_tune_config,
    )

    with sigterm_raises(), _user_errors(), _user_errors(TuneError):
        base = load_train_config(train_config)
        search_config = load_tune_config(config)
        if budget is not None:
            search_config = search_config.model_copy(update={"budget": budget})
        check_space(search_config, base, str(config or DEFAULT_TUNE_CONFIG))
        spec = _data_spec(DataSpec(data, test_data, text_column, label_column, encoding))
        with err.status(f"Loading {spec.describe()}"):
            split = load_split(spec, base)
        err.print(
            f"Data: {len(split.train)} training rows ({search_config.folds}-fold CV), "
            f"{len(split.test)} test rows, classes {', '.join(split.train.classes)}"
        )
        check_folds(split.train, search_config.folds)
        trials = expand(search_config, base)
        result, version = _tune_and_register(
            spec, split, search_config, trials, scheduler, workers, promote_if_better
        )
    from sentiment_mlops.evaluate import print_report

    print_report(result.report, out)
    aliases = f" ({', '.join(version.aliases)})" if version.aliases else ""
    out.print(f"Registered version {version.version}{aliases}, sha256 {version.sha256[:12]}…")


def _tune_and_register(
    spec: DataSpec,
    split: Split,
    search_config: TuneConfig,
    trials: list[Trial],
    scheduler: str | None,
    workers: int | None,
    promote_if_better: bool,
) -> tuple[TrainResult, VersionInfo]:
    """Search on the cluster, logging each trial as it finishes; refit and register the best.

    The cluster is connected before the store is opened, so a wrong address leaves no run.
    Ctrl-C cancels the search, closes the cluster, marks the search's run KILLED and
    registers nothing (an interrupted registration undoes itself, `Registry.register`).
    """
    from sentiment_mlops.train import fit
    from sentiment_mlops.tuning.cluster import connect
    from sentiment_mlops.tuning.progress import SearchProgress
    from sentiment_mlops.tuning.search import (
        StopRequest,
        best_trial,
        run_search,
        stop_on_interrupt,
    )

    with connect(scheduler, workers) as cluster:
        err.print(cluster.describe(), highlight=False, soft_wrap=True)
        registry = _registry()
        search = registry.start_search(
            {
                **search_config.model_dump(exclude={"space"}),
                "space": search_config.space,
                "trials": len(trials),
                "data.source": spec.describe(),
                "data.n_train": len(split.train),
                "cluster.scheduler": cluster.scheduler,
                "cluster.workers": cluster.workers,
            },
            {"data_fingerprint": split.train.fingerprint(), "mlflow.runName": "tune"},
        )
        err.print(f"Search run {search.run_id}: {len(trials)} trials", highlight=False)
        stop: StopRequest | None = None
        try:
            with (
                SearchProgress(err, len(trials), search_config.metric) as progress,
                stop_on_interrupt() as stop,
            ):

                def record(trial: TrialResult) -> None:
                    registry.log_trial(search, trial)
                    progress.update(trial)

                results = run_search(
                    cluster.client,
                    split.train,
                    trials,
                    search_config,
                    on_result=record,
                    stop=stop,
                )
        except KeyboardInterrupt:
            _end_interrupted(registry, search)
            if stop is not None and stop.signum == signal.SIGTERM:
                raise Terminated(128 + signal.SIGTERM) from None
            raise typer.Exit(130) from None
        except Terminated:
            _end_interrupted(registry, search)
            raise
        except BaseException as exc:
            registry.end_search(search, "FAILED", tags={"error": str(exc)})
            raise
    try:
        best = best_trial(results)
        _print_trials(results, search_config.metric)
        assert best.trial.config is not None
        with err.status(f"Refitting trial {best.number} on all {len(split.train)} training rows"):
            result = fit(split, best.trial.config, spec)
        with err.status("Logging and registering the model"):
            version = registry.register_training(result, CHALLENGER, search=search)
        if promote_if_better:
            version = _promote_if_better(registry, result, version)
    except KeyboardInterrupt:
        _end_interrupted(registry, search)
        raise typer.Exit(130) from None
    except Terminated:
        _end_interrupted(registry, search)
        raise
    except BaseException as exc:
        registry.end_search(search, "FAILED", tags={"error": str(exc)})
        raise
    registry.end_search(
        search,
        "FINISHED",
        metrics={
            f"best_cv_{search_config.metric}": best.mean,
            "test_accuracy": result.report.accuracy,
            "failed_trials": sum(not r.ok for r in results),
        },
        tags={"best_trial": str(best.number), "registered_version": str(version.version)},
    )
    return result, version


def _end_interrupted(registry: Registry, search: SearchRun) -> None:
    registry.end_search(search, "KILLED")
    err.print("[yellow]interrupted:[/] search cancelled, nothing registered")


def _print_trials(results: list[TrialResult], metric: str, top: int = 10) -> None:
    finished = sorted((r for r in results if r.ok), key=lambda r: (-r.mean, r.number))
    failed = len(results) - len(finished)
    table = Table(
        title=f"best {min(top, len(finished))} of {len(results)} trials"
        + (f" ({failed} failed)" if failed else ""),
        box=box.SIMPLE_HEAD,
    )
    table.add_column("trial", justify="right")
    table.add_column(f"CV {metric}", justify="right")
    table.add_column("±", justify="right")
    table.add_column("settings")
    for r in finished[:top]:
        settings = " ".join(f"{k}={v!r}" for k, v in r.trial.overrides.items())
        table.add_row(str(r.number), f"{r.mean:.4f}", f"{r.std:.4f}", settings)
    out.print(table)


def _promote_if_better(
    registry: Registry, result: TrainResult, version: VersionInfo
) -> VersionInfo:
    """Champion only if the new version beats the champion on the same test examples by
    more than chance (`tuning.compare`); with no champion yet, it becomes the first."""
    from sentiment_mlops.tuning.compare import compare_paired

    current = registry.resolve(CHAMPION)
    if current is None:
        registry.promote(version.version, CHAMPION)
        err.print(f"No champion yet: version {version.version} is champion")
        return registry.version(version.version)
    champion = registry.load(CHAMPION)
    test = result.split.test
    if set(map(str, champion.pipeline.classes_)) != set(test.classes):
        err.print(
            f"Not promoted: champion (version {current}) predicts other classes than the "
            "test set holds; the two cannot be compared on it",
            soft_wrap=True,
        )
        return version
    comparison = compare_paired(
        test.labels,
        [str(p) for p in result.pipeline.predict(test.texts)],
        [str(p) for p in champion.pipeline.predict(test.texts)],
    )
    if not comparison.better:
        err.print(
            f"Not promoted: not better than champion (version {current}) beyond chance: "
            f"{comparison.describe()}",
            highlight=False,
            soft_wrap=True,
        )
        return version
    registry.promote(version.version, CHAMPION)
    err.print(
        f"Promoted to champion over version {current}: {comparison.describe()}",
        highlight=False,
        soft_wrap=True,
    )
    return registry.version(version.version)


@app.command()
def predict(
    text: Annotated[str, typer.Argument(help="The text to classify")],
    alias: Annotated[str, typer.Option(help="Alias or version number to load")] = CHAMPION,
) -> None:
    """Classify one text with a registered model (verified before loading)."""
    with _registry_errors():
        loaded = _registry().load(alias)
    proba = loaded.pipeline.predict_proba([text])[0]
    classes = [str(c) for c in loaded.pipeline.classes_]
    best = max(range(len(classes)), key=lambda i: proba[i])
    table = Table(title=f"version {loaded.version}: {classes[best]}")
    table.add_column("label")
    table.add_column("probability", justify="right")
    for label, p in zip(classes, proba, strict=True):
        table.add_row(label, f"{p:.4f}")
    out.print(table)


@models_app.command("list")
def models_list() -> None:
    """Versions, aliases and their held-out metrics."""
    with _registry_errors():
        versions = _registry().versions()
    if not versions:
        out.print("No registered versions yet; run `sentiment train`.")
        return
    table = Table(title="model 'sentiment'", box=box.SIMPLE_HEAD)
    for name in ("version", "aliases", "created (UTC)", "accuracy", "macro F1", "sha256"):
        table.add_column(name, no_wrap=True, justify="right" if "ac" in name else "left")
    table.add_column("data")
    for v in versions:
        table.add_row(
            str(v.version),
            ", ".join(v.aliases),
            v.created.strftime("%Y-%m-%d %H:%M"),
            _metric(v.metrics, "accuracy"),
            _metric(v.metrics, "macro_f1"),
            v.sha256[:8],
            Path(v.data_source).name,
        )
    out.print(table)


def _metric(metrics: dict[str, float], name: str) -> str:
    return f"{metrics[name]:.4f}" if name in metrics else "-"


@models_app.command("promote")
def models_promote(
    version: Annotated[int, typer.Argument(help="Version number")],
    alias: Annotated[str, typer.Option(help="Alias to point at it")] = CHAMPION,
) -> None:
    """Point an alias (champion by default) at a version."""
    with _registry_errors():
        _registry().promote(version, alias)
    out.print(f"{alias} -> version {version}")


@models_app.command("rollback")
def models_rollback() -> None:
    """Give champion back to the version that held it before the last promotion."""
    with _registry_errors():
        version = _registry().rollback()
    out.print(f"{CHAMPION} -> version {version}")


@datasets_app.command("fetch")
def datasets_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name: imdb")],
    cache_dir: Annotated[
        Path | None, typer.Option(help="Where to keep it; default var/datasets")
    ] = None,
) -> None:
    """Download a public dataset (checksummed, resumable) and convert it to text,label CSVs."""
    from sentiment_mlops import datasets

    fetchers: dict[str, Callable[[Path], Path]] = {"imdb": datasets.fetch_imdb}
    if name not in fetchers:
        choices = ", ".join(fetchers)
        err.print(f"[bold red]error:[/] unknown dataset {name!r}; choose from {choices}")
        raise typer.Exit(1)
    with _user_errors():
        folder = fetchers[name](cache_dir or Settings().cache_dir())
    for csv in sorted(folder.glob("*.csv")):
        out.print(f"{csv}")
    out.print(
        f"Train with: sentiment train --data {folder}/train.csv --test-data {folder}/test.csv"
    )


@token_app.command("create")
def token_create(
    subject: Annotated[str, typer.Option(help="Who the token is for")],
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: predict,feedback,admin")
    ] = "predict",
    ttl: Annotated[int | None, typer.Option(help="Lifetime in seconds")] = None,
) -> None:
    """Mint a signed JWT with the server's key (SENTIMENT_JWT_* or the dev secret)."""
    from sentiment_mlops.serving.tokens import Authenticator

    with _user_errors(ValueError):  # AuthConfigError is one, as are unknown scopes
        token = Authenticator.from_settings(Settings()).mint(subject, _split(scopes), ttl)
    print(token)


@token_app.command("add-client")
def token_add_client(
    client_id: Annotated[str, typer.Argument(help="The client's id")],
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: predict,feedback,admin")
    ] = "predict",
) -> None:
    """Register an OAuth2 client for POST /token; prints its secret once (stored hashed)."""
    from sentiment_mlops.serving.clients import add_client

    settings = Settings()
    with _user_errors(ValueError):
        secret = add_client(settings.clients_file(), client_id, _split(scopes))
    err.print(f"client {client_id!r} saved to {settings.clients_file()}; its secret (shown once):")
    print(secret)


def _split(scopes: str) -> list[str]:
    return [s.strip() for s in scopes.split(",") if s.strip()]


@ab_app.command("report")
def ab_report(
    experiment: Annotated[
        str | None, typer.Option(help="Experiment; default: the one with the latest prediction")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only predictions made since an ISO date/time (UTC unless it has an offset: "
            "2026-11-01, 2026-11-01T09:30+01:00) or a duration ago (30m, 24h, 7d, 2w)"
        ),
    ] = None,
    baseline: Annotated[
        str, typer.Option(help="The variant the others are compared with")
    ] = CHAMPION,
    mde: Annotated[
        float,
        typer.Option(help="Minimum detectable effect: smallest accuracy difference to look for"),
    ] = DEFAULT_MDE,
    method: Annotated[
        Literal["sequential", "fixed"],
        typer.Option(
            help="Test behind the recommendation: sequential (mSPRT, safe to read every day) "
            "or fixed (one look at a sample size planned in advance)"
        ),
    ] = "sequential",
    across_versions: Annotated[
        bool,
        typer.Option(
            "--across-versions",
            help="Read the whole window even where a variant changed model version in it "
            "(default: the experiment restarts at the latest change)",
        ),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout, not as tables")
    ] = False,
) -> None:
    """Per variant: traffic, feedback coverage, accuracy, latency; against the baseline: the
    difference, its test, and whether to promote, keep, or wait for more labels."""
    from sentiment_mlops.abtest.analysis import MIN_MDE, Options, analyse
    from sentiment_mlops.abtest.errors import AbTestError
    from sentiment_mlops.abtest.log import parse_since, read_log
    from sentiment_mlops.abtest.report import print_report

    if not MIN_MDE <= mde < 0.5:
        raise typer.BadParameter(
            f"an accuracy difference of at least {MIN_MDE:g} and below 0.5", param_hint="'--mde'"
        )
    try:
        start = None if since is None else parse_since(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--since'") from exc
    with _user_errors(AbTestError):
        log = read_log(Settings().prediction_log_url(), experiment, start)
        options = Options(
            baseline=baseline, mde=mde, method=method, across_versions=across_versions
        )
        report = analyse(log, options)
    if json_output:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report, out)


@features_app.command("materialize")
def features_materialize(
    since: Annotated[
        str | None,
        typer.Option(
            help="Only predictions made or given feedback since an ISO date/time (UTC unless "
            "it has an offset) or a duration ago (30m, 24h, 7d); default: the whole log"
        ),
    ] = None,
) -> None:
    """Add the prediction log's predictions and feedback to the feature store and push every
    user's and account's latest features into the online store (SENTIMENT_FEATURES_*)."""
    from sentiment_mlops.abtest.log import parse_since
    from sentiment_mlops.data import DataError

    try:
        start = None if since is None else parse_since(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--since'") from exc
    from sentiment_mlops.features.feast_import import feast_imported
    from sentiment_mlops.features.live import materialize_log

    try:
        feast_imported()
    except ImportError as exc:
        err.print(
            f"[bold red]error:[/] the feature store needs the `features` extra "
            f"(pip install '.\\[features]'): {exc}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from exc
    from sqlalchemy.exc import SQLAlchemyError

    with _user_errors(DataError, SQLAlchemyError):
        done = materialize_log(Settings(), start)
    out.print(
        f"Read {done.read} predictions from the log ({done.labelled} with feedback); the "
        f"feature store holds {done.stored} events; online features as of "
        f"{done.end.isoformat(timespec='seconds')}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def health(
    ready: Annotated[
        bool, typer.Option("--ready", help="Ask /ready (a verified model serves) not /health")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer")] = 3.0,
) -> None:
    """Exit 0 if the server on this machine (SENTIMENT_PORT) answers /health, or /ready, with
    200; else 1 and why. A container's HEALTHCHECK, where there is no curl."""
    from sentiment_mlops.serving.launcher import probe

    url = f"{Settings().local_url()}/{'ready' if ready else 'health'}"
    problem = probe(url, timeout)
    if problem is not None:
        err.print(f"[bold red]unhealthy:[/] {url}: {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print(f"{url}: 200", highlight=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface; default SENTIMENT_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Port; default SENTIMENT_PORT (8000)")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes")] = None,
    train_if_missing: Annotated[
        bool, typer.Option("--train-if-missing", help="Train on the built-in data first if needed")
    ] = False,
) -> None:
    """Serve the registry's aliased versions over HTTP, routed by configs/routing.yaml (see
    GET /docs)."""
    import os

    from sentiment_mlops.serving.routing import read_routing
    from sentiment_mlops.serving.server import prepare_environment, run_server, usage_hint
    from sentiment_mlops.subjects import subject_key

    overrides = {"SENTIMENT_HOST": host, "SENTIMENT_PORT": port, "SENTIMENT_WORKERS": workers}
    for name, value in overrides.items():
        if value is not None:
            os.environ[name] = str(value)
    settings = Settings()
    # A bad routing config or subject key stops the command here, in one line; a worker that
    # finds the routing config bad later (a replacement after the file was edited) listens,
    # unready, and says why.
    with _user_errors(ConfigError):
        read_routing(settings)
        subject_key(settings)
    if train_if_missing:
        from sentiment_mlops.train import DataSpec

        with sigterm_raises(), _user_errors():
            registry = _registry()
            if registry.resolve(settings.model_alias) is None:
                _train_and_register(_data_spec(DataSpec()), load_train_config(None), registry, None)
    prepare_environment(settings)
    err.print(usage_hint(settings), highlight=False, soft_wrap=True)
    run_server(settings)


if __name__ == "__main__":
    app()
