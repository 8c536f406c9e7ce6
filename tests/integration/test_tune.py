"""`sentiment tune` end to end: a real `dask scheduler` with two `dask worker` processes on
loopback, a local cluster, a real MLflow store; a worker killed mid-search; Ctrl-C."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from distributed import Client
from mlflow.entities import Run, ViewType
from typer.testing import CliRunner

from sentiment_mlops.cli import app
from sentiment_mlops.config import CHALLENGER, CHAMPION, Settings, TrainConfig
from sentiment_mlops.data import Split
from sentiment_mlops.registry import PARENT_TAG, Registry
from sentiment_mlops.train import DataSpec, load_split
from sentiment_mlops.tuning.cluster import connect
from sentiment_mlops.tuning.search import TrialResult, run_search
from sentiment_mlops.tuning.space import TuneConfig, expand

from .dask_cluster import SRC, DaskCluster

runner = CliRunner()

# Six trials, two folds; trials 4-6 ask the vectorizer for terms in at most one document
# but at least two (min_df), which sklearn refuses: three failed trials among three good.
TINY: dict[str, Any] = {
    "search": "grid",
    "budget": 6,
    "folds": 2,
    "space": {"vectorizer.max_df": [1.0, 1], "classifier.C": [0.3, 1.0, 3.0]},
}
MAX_DF_ERROR = "max_df corresponds to < documents than min_df"
# From the stop signal to the process's exit: the trials in flight cancelled, the run ended
# KILLED and the local cluster closed (the wait this test has always allowed it).
STOP_BOUND = 120


def write_sample(source: Path, destination: Path, per_class: int) -> Path:
    """The first and last `per_class` rows of a file sorted by label: both classes."""
    with source.open(encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    with destination.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows[:per_class] + rows[-per_class:])
    return destination


def write_yaml(path: Path, content: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tune")


@pytest.fixture(scope="module")
def small(folder: Path, shared_data: Path) -> Path:
    """600 movie-review snippets (80/20: 480 to search on, 120 to test)."""
    return write_sample(shared_data / "mr-rt-polarity" / "all.csv", folder / "small.csv", 300)


@pytest.fixture(scope="module")
def small_split(small: Path) -> Split:
    return load_split(DataSpec(small), TrainConfig())


@pytest.fixture(scope="module")
def cluster(folder: Path) -> Iterator[DaskCluster]:
    (folder / "cluster").mkdir()
    started = DaskCluster.start(folder / "cluster", workers=2)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def local_results(small_split: Split) -> list[TrialResult]:
    """The tiny search on a local cluster of one worker: what every other run must equal."""
    config = TuneConfig.model_validate(TINY)
    with connect(workers=1) as local:
        assert local.local and local.workers == 1
        return run_search(local.client, small_split.train, expand(config, TrainConfig()), config)


@pytest.fixture
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None) -> Path:
    var = tmp_path / "var"
    monkeypatch.setenv("SENTIMENT_VAR_DIR", str(var))
    monkeypatch.chdir(tmp_path)
    return var


def all_runs(var: Path) -> list[Run]:
    registry = Registry(Settings(var_dir=var))
    experiments = [e.experiment_id for e in registry.client.search_experiments(ViewType.ALL)]
    return list(registry.client.search_runs(experiments, run_view_type=ViewType.ALL))


def tune(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["tune", *args])
    return result.exit_code, result.output


def test_a_search_on_a_dask_cluster_logs_every_trial_and_registers_a_challenger(
    var_dir: Path,
    tmp_path: Path,
    small: Path,
    cluster: DaskCluster,
    local_results: list[TrialResult],
) -> None:
    config = write_yaml(tmp_path / "tune.yaml", TINY)
    code, output = tune(
        "--data", str(small), "--config", str(config), "--scheduler", cluster.address
    )
    assert code == 0, output
    assert f"cluster: 2 workers, scheduler {cluster.address}" in output
    assert "Registered version 1 (challenger)" in output

    runs = all_runs(var_dir)
    (search,) = [r for r in runs if PARENT_TAG not in r.data.tags]
    assert search.info.status == "FINISHED"
    assert search.data.params["trials"] == "6"
    assert search.data.tags["registered_version"] == "1"
    children = {
        r.info.run_name: r for r in runs if r.data.tags.get(PARENT_TAG) == search.info.run_id
    }
    assert sorted(children) == ["refit-best", *(f"trial-{n}" for n in range(1, 7))]

    # Every trial, finished or failed, as the local run with the same seed has it.
    for expected in local_results:
        run = children[f"trial-{expected.number}"]
        assert run.data.tags["trial"] == str(expected.number)
        if expected.ok:
            assert run.info.status == "FINISHED"
            assert run.data.metrics["cv_accuracy_mean"] == pytest.approx(expected.mean, abs=1e-12)
            assert run.data.metrics["cv_accuracy_std"] == pytest.approx(expected.std, abs=1e-12)
            assert run.data.metrics["fit_seconds"] > 0
            assert run.data.params["classifier.C"] == str(expected.trial.overrides["classifier.C"])
        else:
            assert run.info.status == "FAILED"
            assert MAX_DF_ERROR in run.data.tags["error"]
    assert [r.ok for r in local_results] == [True] * 3 + [False] * 3
    workers = {
        address
        for run in children.values()
        if "worker" in run.data.tags
        for address in run.data.tags["worker"].split(", ")
    }
    assert workers == set(cluster.worker_addresses().values())  # both did trials

    best = max((r for r in local_results if r.ok), key=lambda r: (r.mean, -r.number))
    assert search.data.tags["best_trial"] == str(best.number)
    registry = Registry(Settings(var_dir=var_dir))
    (version,) = registry.versions()
    assert version.aliases == [CHALLENGER]  # never champion by itself, even as the first
    assert registry.resolve(CHAMPION) is None
    assert version.run_id == children["refit-best"].info.run_id
    refit = children["refit-best"].data
    assert refit.params["classifier.C"] == str(best.trial.overrides["classifier.C"])
    assert "accuracy" in refit.metrics


def test_a_worker_killed_mid_search_loses_no_trial(tmp_path: Path, small_split: Split) -> None:
    """The worker with the most tasks is killed (SIGKILL, no nanny to restart it) when the
    first trial is in; its tasks are recomputed on the other, and every trial finishes with
    the scores a search on the survivor alone gives."""
    cluster = DaskCluster.start(tmp_path, workers=2)
    try:
        config = TuneConfig.model_validate(
            {
                "search": "grid",
                "budget": 12,
                "folds": 2,
                "space": {
                    "vectorizer.ngram_range": [[1, 1], [1, 2], [1, 3]],
                    "classifier.C": [0.3, 1.0, 3.0, 10.0],
                },
            }
        )
        trials = expand(config, TrainConfig())
        names = cluster.worker_addresses()
        killed: dict[str, Any] = {}
        reported: list[TrialResult] = []

        with Client(cluster.address, timeout=30) as client:

            def kill_the_busiest(result: TrialResult) -> None:
                reported.append(result)
                if killed:
                    return
                processing = client.processing()
                victim = max(processing, key=lambda address: len(processing[address]))
                killed.update(address=victim, keys=list(processing[victim]))
                cluster.kill(next(n for n, a in names.items() if a == victim))

            results = run_search(
                client, small_split.train, trials, config, on_result=kill_the_busiest
            )
            assert killed["keys"], "the killed worker was running nothing"
            survivor = next(a for a in names.values() if a != killed["address"])
            assert list(client.nthreads()) == [survivor]
            reference = run_search(client, small_split.train, trials, config)

        assert [r.number for r in results] == list(range(1, 13))
        assert sorted(r.number for r in reported) == list(range(1, 13))
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        assert [r.scores for r in results] == [r.scores for r in reference]
        interrupted = {
            int(match.group(1))
            for key in killed["keys"]
            if (match := re.match(r"score-trial(\d+)-fold\d+-", str(key)))
        }
        for result in results:
            if result.number in interrupted:
                assert survivor in result.workers
    finally:
        cluster.stop()


def test_promote_if_better_judges_on_the_same_test_set(
    var_dir: Path, tmp_path: Path, shared_data: Path, cluster: DaskCluster
) -> None:
    """A weak champion (five features) is replaced; the same search again finds the same
    model, which is not better than itself, so the champion stays."""
    data = write_sample(shared_data / "mr-rt-polarity" / "all.csv", tmp_path / "mr.csv", 1000)
    weak = write_yaml(tmp_path / "weak.yaml", {"vectorizer": {"max_features": 5}})
    result = runner.invoke(app, ["train", "--data", str(data), "--config", str(weak)])
    assert result.exit_code == 0, result.output
    config = write_yaml(
        tmp_path / "tune.yaml",
        {"search": "grid", "budget": 2, "folds": 2, "space": {"classifier.C": [1.0, 10.0]}},
    )
    args = ("--data", str(data), "--config", str(config), "--scheduler", cluster.address)
    registry = Registry(Settings(var_dir=var_dir))

    code, output = tune(*args, "--promote-if-better")
    assert code == 0, output
    assert "Promoted to champion over version 1" in output
    assert "McNemar exact p = " in output
    assert registry.resolve(CHAMPION) == 2

    code, output = tune(*args, "--promote-if-better")
    assert code == 0, output
    assert "Not promoted: not better than champion (version 2)" in output
    assert "only the new model right on 0, only the champion on 0" in output
    assert registry.resolve(CHAMPION) == 2
    assert registry.resolve(CHALLENGER) == 3


def test_bad_input_fails_before_any_run(var_dir: Path, tmp_path: Path, small: Path) -> None:
    unknown = write_yaml(tmp_path / "unknown.yaml", {"space": {"vectorizer.ngram": [[1, 1]]}})
    code, output = tune("--data", str(small), "--config", str(unknown))
    assert code == 1
    assert "space.vectorizer.ngram: not a setting of a config section" in output
    code, output = tune(
        "--data",
        str(small),
        "--config",
        str(write_yaml(tmp_path / "ok.yaml", TINY)),
        "--scheduler",
        "tcp://127.0.0.1:9",
    )
    assert code == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in output
    code, output = tune(
        "--data",
        str(small),
        "--config",
        str(write_yaml(tmp_path / "folds.yaml", {**TINY, "folds": 400})),
    )
    assert code == 1
    assert "400-fold cross-validation needs at least 400 rows of each class" in output
    assert not (var_dir / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("stop", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_ctrl_c_stops_the_search_and_registers_nothing(
    var_dir: Path, tmp_path: Path, shared_data: Path, stop: signal.Signals, status: int
) -> None:
    """SIGINT (or SIGTERM) once the first trial is logged, on the default local cluster:
    exit 130 (143), the search's run KILLED, the trials logged so far kept, no model version,
    no refit."""
    data = write_sample(shared_data / "imdb-aclimdb" / "train.csv", tmp_path / "imdb.csv", 500)
    config = write_yaml(
        tmp_path / "tune.yaml",
        {
            "search": "grid",
            "budget": 12,
            "folds": 2,
            "space": {
                "vectorizer.ngram_range": [[1, 1], [1, 2], [1, 3]],
                "classifier.C": [0.3, 1.0, 3.0, 10.0],
            },
        },
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sentiment_mlops.cli",
            "tune",
            "--data",
            str(data),
            "--config",
            str(config),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SENTIMENT_VAR_DIR": str(var_dir), "PYTHONPATH": str(SRC)},
    )
    assert proc.stderr is not None
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("trial "):
                break
        assert proc.poll() is None, "".join(seen)
        proc.send_signal(stop)
        # Bounded: a search that hung as it closed its cluster once left this read waiting.
        _, rest = proc.communicate(timeout=STOP_BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == status, "".join(seen) + rest
    assert "interrupted: search cancelled, nothing registered" in rest

    runs = all_runs(var_dir)
    (search,) = [r for r in runs if PARENT_TAG not in r.data.tags]
    assert search.info.status == "KILLED"
    names = {r.info.run_name for r in runs if PARENT_TAG in r.data.tags}
    assert "refit-best" not in names
    assert 1 <= len(names) < 12
    assert Registry(Settings(var_dir=var_dir)).versions() == []
