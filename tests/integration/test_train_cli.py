"""`sentiment train` and the registry commands, end to end on real data and a real store."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from typer.testing import CliRunner

from sentiment_mlops.cli import app
from sentiment_mlops.config import Settings
from sentiment_mlops.registry import Registry

runner = CliRunner()


@pytest.fixture
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None) -> Path:
    var = tmp_path / "var"
    monkeypatch.setenv("SENTIMENT_VAR_DIR", str(var))
    monkeypatch.chdir(tmp_path)
    return var


def runs_and_versions(var: Path) -> tuple[int, int]:
    """Every run (deleted ones too) and every registered version in the store; none when the
    store was never created."""
    if not (var / "mlflow.db").exists():
        return 0, 0
    registry = Registry(Settings(var_dir=var))
    experiments = [e.experiment_id for e in registry.client.search_experiments(ViewType.ALL)]
    runs = registry.client.search_runs(experiments, run_view_type=ViewType.ALL)
    return len(runs), len(registry.versions())


def write_rows(path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or ["text", "label"])
        writer.writerows(rows)
    return path


def sample(shared: Path, n: int = 600) -> list[list[str]]:
    with (shared / "mr-rt-polarity" / "all.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return rows[: n // 2] + rows[-n // 2 :]


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


Maker = Callable[[Path, list[list[str]]], Path]
BAD_INPUTS: dict[str, tuple[Maker, str]] = {
    "missing column": (
        lambda d, rows: write_rows(d / "a.csv", rows, ["review", "label"]),
        r"a\.csv: no column 'text'",
    ),
    "empty text": (
        lambda d, rows: write_rows(d / "b.csv", [*rows, ["", "positive"]]),
        r"b\.csv: row 601, column 'text': empty",
    ),
    "whitespace text": (
        lambda d, rows: write_rows(d / "c.csv", [["  \t ", "positive"], *rows]),
        r"c\.csv: row 1, column 'text': empty or whitespace-only",
    ),
    "missing label": (
        lambda d, rows: write_rows(d / "e.csv", [*rows[:5], ["fine", ""], *rows]),
        r"e\.csv: row 6, column 'label': missing label",
    ),
    "one class": (
        lambda d, rows: write_rows(d / "f.csv", [[t, "positive"] for t, _ in rows]),
        r"f\.csv: column 'label': only one class",
    ),
    "empty file": (lambda d, rows: write_bytes(d / "g.csv", b""), r"g\.csv: file is empty"),
    "undecodable": (
        lambda d, rows: write_bytes(d / "h.csv", b"text,label\nok,positive\n\xff\xfe,x\n"),
        r"h\.csv: line 3: byte 0xff is not valid utf-8",
    ),
    "missing file": (lambda d, rows: d / "nope.csv", r"nope\.csv: file not found"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_training_data_fails_cleanly_and_registers_nothing(
    case: str, var_dir: Path, tmp_path: Path, shared_data: Path
) -> None:
    make, message = BAD_INPUTS[case]
    path = make(tmp_path, sample(shared_data))
    code, output = invoke("train", "--data", str(path))
    assert code == 1
    error_lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, output
    assert re.search(message, error_lines[0]), error_lines[0]
    assert runs_and_versions(var_dir) == (0, 0)


def test_unseen_label_in_test_file(var_dir: Path, tmp_path: Path, shared_data: Path) -> None:
    rows = sample(shared_data)
    train = write_rows(tmp_path / "train.csv", rows)
    test = write_rows(tmp_path / "test.csv", [*rows[:3], ["meh", "neutral"]])
    code, output = invoke("train", "--data", str(train), "--test-data", str(test))
    assert code == 1
    assert "test.csv: row 4, column 'label': label 'neutral' does not occur" in output
    assert runs_and_versions(var_dir) == (0, 0)


def test_validation_data_fits_the_calibrator_and_is_recorded(
    var_dir: Path, tmp_path: Path, shared_data: Path
) -> None:
    rows = sample(shared_data, 800)
    train = write_rows(tmp_path / "train.csv", rows[100:-100])
    validation = write_rows(tmp_path / "val.csv", rows[:100] + rows[-100:])
    plain = ["train", "--data", str(train), "--validation-data", str(validation)]
    code, output = invoke(*plain)
    assert code == 1
    assert "calibration.method is none" in output
    assert runs_and_versions(var_dir) == (0, 0)
    config = tmp_path / "calibrated.yaml"
    config.write_text("calibration:\n  method: sigmoid\n", encoding="utf-8")
    code, output = invoke(*plain, "--config", str(config))
    assert code == 0, output
    registry = Registry(Settings(var_dir=var_dir))
    (version,) = registry.versions()
    run = registry.client.get_run(version.run_id)
    assert run.data.params["data.validation_source"] == str(validation)
    assert run.data.params["data.n_validation"] == "200"
    assert "validation_fingerprint" in run.data.tags


def test_conflicting_duplicates_are_reported(
    var_dir: Path, tmp_path: Path, shared_data: Path
) -> None:
    rows = sample(shared_data)
    path = write_rows(
        tmp_path / "d.csv", [*rows, ["same words", "positive"], ["same words", "negative"]]
    )
    code, output = invoke("train", "--data", str(path))
    assert code == 0, output
    assert "1 texts occur with conflicting labels" in output


def test_train_list_predict_promote_rollback(
    var_dir: Path, tmp_path: Path, shared_data: Path
) -> None:
    path = write_rows(tmp_path / "mr.csv", sample(shared_data, 2000))
    code, output = invoke("train", "--data", str(path))
    assert code == 0, output
    assert "Registered version 1 (champion)" in output
    assert "accuracy" in output and "Confusion matrix" in output
    registry = Registry(Settings(var_dir=var_dir))
    artifacts = {a.path for a in registry.client.list_artifacts(registry.version(1).run_id)}
    assert {"report.json", "confusion_matrix.png", "roc.png", "reliability.png"} <= artifacts
    assert {"model", "train_config.json"} <= artifacts
    code, output = invoke("train", "--data", str(path), "--alias", "challenger")
    assert "Registered version 2 (challenger)" in output

    code, output = invoke("models", "list")
    assert code == 0
    assert "champion" in output and "challenger" in output

    code, output = invoke("predict", "a moving, beautifully acted and wonderful film")
    assert code == 0 and "version 1: positive" in output

    assert invoke("models", "promote", "2", "--alias", "champion") == (0, "champion -> version 2\n")
    assert (
        invoke("predict", "dull")[1].startswith("version 2")
        or "version 2" in invoke("predict", "dull")[1]
    )
    assert invoke("models", "rollback") == (0, "champion -> version 1\n")
    code, output = invoke("models", "rollback")
    assert code == 1 and "no previous champion" in output

    code, output = invoke("train", "--data", str(path), "--if-no-champion")
    assert code == 0 and "not training" in output
    assert runs_and_versions(var_dir) == (2, 2)


def test_multiclass_training_on_the_airline_set(var_dir: Path, shared_data: Path) -> None:
    code, output = invoke(
        "train", "--data", str(shared_data / "twitter-us-airline-sentiment" / "all.csv")
    )
    assert code == 0, output
    assert "neutral" in output
    run = Registry(Settings(var_dir=var_dir)).version(1)
    assert run.metrics["accuracy"] > 0.7
    assert "roc_auc" in run.metrics


def test_killed_mid_training_leaves_nothing_registered(var_dir: Path, shared_data: Path) -> None:
    imdb = shared_data / "imdb-aclimdb"
    env = {**os.environ, "SENTIMENT_VAR_DIR": str(var_dir)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sentiment_mlops.cli",
            "train",
            "--data",
            str(imdb / "train.csv"),
            "--test-data",
            str(imdb / "test.csv"),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    for line in proc.stderr:
        if "Fitting" in line or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert runs_and_versions(var_dir) == (0, 0)


# `sentiment train`, sent SIGTERM by itself (or failing) while it draws the confusion matrix:
# the report files are then in a temporary folder (Registry.register_training), nothing is in
# the store.
FAILING_WHILE_PLOTTING = """
import os, signal, sys
from sentiment_mlops import evaluate
from sentiment_mlops.cli import app

draw = evaluate._plot_confusion_matrix

def failing(report):
    if sys.argv[1] == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    else:
        raise MemoryError("drawing the confusion matrix")
    return draw(report)

evaluate._plot_confusion_matrix = failing
app(sys.argv[2:], prog_name="sentiment")
"""


@pytest.mark.parametrize(("failure", "status"), [("sigterm", 143), ("error", 1)])
def test_a_run_ended_while_writing_the_report_leaves_no_temporary_folder(
    var_dir: Path, tmp_path: Path, shared_data: Path, failure: str, status: int
) -> None:
    """SIGTERM (a timeout, `kill`, a container stopping) ended the process at once, skipping
    every `finally`: each one left the report files in /tmp (216 MB with 5,000 classes)."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    data = write_rows(tmp_path / "mr.csv", sample(shared_data, 200))
    env = {**os.environ, "SENTIMENT_VAR_DIR": str(var_dir), "TMPDIR": str(temporary)}
    proc = subprocess.run(
        [sys.executable, "-c", FAILING_WHILE_PLOTTING, failure, "train", "--data", str(data)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == status, proc.stderr
    assert list(temporary.iterdir()) == []
    assert runs_and_versions(var_dir) == (0, 0)
