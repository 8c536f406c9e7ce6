"""Several `sentiment train` processes started at once on a new, empty SQLite store."""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

from sentiment_mlops.config import CHAMPION, Settings
from sentiment_mlops.registry import Registry

TRAININGS = 3
# How long all of them may take together. One alone takes ~7 s here on the small file below
# (imports, fit, MLflow creating the store, logging), three at once on two busy cores ~15 s;
# the bound is twenty times that, so only a hung process reaches it.
TRAININGS_BOUND = 300.0


def small_training_file(path: Path) -> Path:
    """200 labelled rows: the fit takes a moment, so the processes reach the store together
    (MLflow's first migration of it takes ~2 s, the window the race needs)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(100):
            writer.writerow([f"a good film, lovely {i}", "positive"])
            writer.writerow([f"a bad film, awful {i}", "negative"])
    return path


def test_trainings_started_together_on_a_new_store_all_register(
    tmp_path: Path, clean_env: None
) -> None:
    var = tmp_path / "var"
    data = small_training_file(tmp_path / "small.csv")
    env = {**os.environ, "SENTIMENT_VAR_DIR": str(var)}
    command = [sys.executable, "-m", "sentiment_mlops.cli"]
    outputs = [tmp_path / f"train-{i}.log" for i in range(TRAININGS)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for output in outputs:
            with output.open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [*command, "train", "--data", str(data)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=tmp_path,
                    )
                )
        deadline = time.monotonic() + TRAININGS_BOUND
        codes = [proc.wait(timeout=max(0.0, deadline - time.monotonic())) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
    logs = [output.read_text(encoding="utf-8", errors="replace") for output in outputs]
    assert codes == [0] * TRAININGS, "\n\n".join(logs)

    registry = Registry(Settings(var_dir=var))
    assert [v.version for v in registry.versions()] == [3, 2, 1]
    assert registry.resolve(CHAMPION) is not None
    listed = subprocess.run(
        [*command, "models", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=TRAININGS_BOUND,
        check=False,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert sorted(row[0] for row in rows if row and row[0].isdigit()) == ["1", "2", "3"]
