"""The serving image, built and run with podman (make test-container; minutes, not in `make
test`): read-only root filesystem, UID 10001, trains its first model into a volume, answers
/ready, /predict and /feedback with a token signed by the secret passed in, and stops cleanly
on SIGTERM. The features image (the same Dockerfile with requirements-features.lock) holds
Feast and materialises a prediction log into a feature repository in its volume, as the same
non-root user. The MLflow server image is built too and must hold the UI. Prints the sizes."""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from packaging.utils import canonicalize_name

from sentiment_mlops.config import Settings
from sentiment_mlops.serving.launcher import free_port
from sentiment_mlops.serving.log_database import LogDatabase
from sentiment_mlops.serving.prediction_log import prediction_row
from sentiment_mlops.serving.tokens import Authenticator
from sentiment_mlops.subjects import subject_key
from tests.deploy import podman as pm
from tests.deploy.locks import pins
from tests.prediction_events import BOUND, event

pytestmark = [pytest.mark.container, pytest.mark.timeout(2400)]

DOCKER = pm.ROOT / "deploy" / "docker"
SERVING_TAG = "localhost/sentiment-mlops:test"
FEATURES_TAG = "localhost/sentiment-mlops-features:test"
FEATURES_LOCK = DOCKER / "requirements-features.lock"
MLFLOW_TAG = "localhost/sentiment-mlops-mlflow:test"
UID = "10001"
# What the serving image may weigh (bytes): the stand-in base is ~200 MB, the project's
# dependencies ~760 MB; the full mlflow alone would add ~400 MB more.
SIZE_BUDGET = 1_100_000_000


@pytest.fixture(scope="module")
def serving_image() -> str:
    if missing := pm.missing_tools():
        pytest.fail(f"not installed: {', '.join(missing)} (.ci/run installs them)")
    pm.build(DOCKER / "Dockerfile", SERVING_TAG, DOCKER / "requirements.lock")
    return SERVING_TAG


@pytest.fixture(scope="module")
def features_image() -> str:
    """The serving Dockerfile built from the features lock (its base layers are the serving
    image's, reused)."""
    if missing := pm.missing_tools():
        pytest.fail(f"not installed: {', '.join(missing)} (.ci/run installs them)")
    pm.build(
        DOCKER / "Dockerfile", FEATURES_TAG, FEATURES_LOCK, build_args={"LOCK": FEATURES_LOCK.name}
    )
    return FEATURES_TAG


@dataclass
class Container:
    name: str
    url: str

    def logs(self) -> str:
        """What the container wrote to stdout, then to stderr."""
        return pm.run(["podman", "logs", self.name], check=False, stderr=True, timeout=60)

    def exec(self, *command: str) -> str:
        return pm.podman("exec", self.name, *command, timeout=120)

    def state(self) -> dict[str, object]:
        state: dict[str, object] = pm.inspect("container", self.name)["State"]
        return state

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.state()["Running"]:
                pytest.fail(f"container exited:\n{self.logs()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        pytest.fail(f"not ready after {timeout:.0f} s:\n{self.logs()[-4000:]}")

    def records(self) -> list[dict[str, object]]:
        found = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found


@pytest.fixture
def secret() -> str:
    return secrets.token_urlsafe(40)


@pytest.fixture
def volume() -> Iterator[str]:
    name = f"sentiment-test-{uuid.uuid4().hex[:8]}"
    pm.podman("volume", "create", name, timeout=60)
    yield name
    pm.podman("volume", "rm", "--force", name, check=False, timeout=60)


def start(image: str, volume: str, secret: str, workers: int, *args: str) -> Container:
    """`podman run` as `docker run` would be used in production: read-only root, only /tmp
    (tmpfs) and the var volume writable (podman's own /run, /tmp tmpfs turned off)."""
    name = f"sentiment-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    pm.podman(
        "run",
        "--detach",
        f"--name={name}",
        "--read-only",
        "--read-only-tmpfs=false",
        "--tmpfs=/tmp:rw,size=256m,mode=1777",
        f"--volume={volume}:/var/lib/sentiment",
        f"--publish=127.0.0.1:{port}:8000",
        f"--env=SENTIMENT_JWT_SECRET={secret}",
        f"--env=SENTIMENT_WORKERS={workers}",
        image,
        *args,
        timeout=120,
    )
    return Container(name, f"http://127.0.0.1:{port}")


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in started:
        pm.podman("rm", "--force", "--time=1", container.name, check=False, timeout=120)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_image_trains_serves_read_only_as_non_root_and_stops_on_sigterm(
    serving_image: str,
    volume: str,
    secret: str,
    containers: list[Container],
    workers: int,
) -> None:
    container = start(serving_image, volume, secret, workers, "serve", "--train-if-missing")
    containers.append(container)
    container.wait_ready(timeout=300)

    authenticator = Authenticator.from_settings(Settings(jwt_secret=secret))
    token = authenticator.mint("ci", ["predict", "feedback"])
    bearer = {"Authorization": f"Bearer {token}"}
    answer = httpx.post(
        f"{container.url}/predict",
        json={"text": "the crew was friendly and the flight was great"},
        headers=bearer,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == "positive" and answer.json()["model_version"] == 1
    # The prediction log (SQLite in the volume, migrated at startup) holds it; with several
    # workers another one may answer before the row is written ("retry shortly").
    deadline = time.monotonic() + 15
    while True:
        feedback = httpx.post(
            f"{container.url}/feedback",
            json={"prediction_id": answer.json()["prediction_id"], "label": "positive"},
            headers=bearer,
            timeout=30,
        )
        if feedback.status_code != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert feedback.status_code == 200 and feedback.json()["correct"] is True, feedback.text
    assert httpx.get(f"{container.url}/ready", timeout=30).json()["prediction_log"] == "ok"
    unsigned = Authenticator.from_settings(Settings(jwt_secret="x" * 40)).mint("ci", ["predict"])
    refused = httpx.post(
        f"{container.url}/predict",
        json={"text": "fine"},
        headers={"Authorization": f"Bearer {unsigned}"},
        timeout=30,
    )
    assert refused.status_code == 401
    metrics = httpx.get(f"{container.url}/metrics", timeout=30)
    assert metrics.status_code == 200 and "model_predictions_total{" in metrics.text

    assert container.exec("id", "-u").strip() == UID
    pid1 = container.exec("cat", "/proc/1/cmdline").replace("\0", " ")
    assert "/opt/venv/bin/sentiment serve" in pid1, pid1
    refused = container.exec("sh", "-c", "touch /app/probe /opt/venv/probe 2>&1; echo status=$?")
    assert refused.count("Read-only file system") == 2 and "status=1" in refused, refused
    written = container.exec("sh", "-c", "touch /tmp/probe /var/lib/sentiment/probe && echo ok")
    assert written.strip() == "ok"
    pm.podman("healthcheck", "run", container.name, timeout=60)  # exit status 0: healthy
    if workers > 1:  # the metrics folder of several workers, in /dev/shm
        assert "sentiment-mlops-1" in container.exec("ls", "/dev/shm")

    started = time.monotonic()
    pm.podman("stop", "--time=60", container.name, timeout=120)
    stopped_in = time.monotonic() - started
    state = container.state()
    assert state["ExitCode"] == 0, container.logs()[-4000:]
    messages = [str(r.get("msg")) for r in container.records()]
    assert "SIGTERM: draining" in messages
    assert "Application shutdown complete." in messages
    last = "Stopping parent process [1]" if workers > 1 else "Finished server process [1]"
    assert messages[-1] == last, messages[-5:]
    assert stopped_in < 30, stopped_in  # grace 5 s, then uvicorn's shutdown


def _installed(image: str) -> set[str]:
    """The canonical names of the distributions installed in `image`'s Python."""
    names = json.loads(
        pm.podman(
            "run",
            "--rm",
            "--read-only",
            "--entrypoint=python3",
            image,
            "-c",
            "import json, importlib.metadata as m; "
            "print(json.dumps(sorted(d.metadata['Name'].lower() for d in m.distributions())))",
            timeout=120,
        )
    )
    return {canonicalize_name(n) for n in names}


def test_the_image_holds_the_lock_and_no_full_mlflow(serving_image: str) -> None:
    installed = _installed(serving_image)
    assert installed == {*pins(DOCKER / "requirements.lock"), "sentiment-mlops"} - {"setuptools"}
    assert "mlflow" not in installed and "pip" not in installed


# The one module that imports Feast when it is imported (the serving code imports it lazily).
FEAST_MODULE = "sentiment_mlops.features.repository"


def _import_every_module(image: str, *, but: str = "") -> tuple[int, bool]:
    """Import every module of the project in `image` (but the one named); how many, and
    whether feast is importable there."""
    out = pm.podman(
        "run",
        "--rm",
        "--read-only",
        "--entrypoint=python3",
        image,
        "-c",
        "import importlib, pkgutil, sentiment_mlops as p; "
        "names = [m.name for m in pkgutil.walk_packages(p.__path__, 'sentiment_mlops.') "
        "if '.migrations.' not in m.name "  # alembic runs those (the server, at startup)
        f"and m.name != {but!r}]; "
        "[importlib.import_module(n) for n in names]; "
        "import mlflow.sklearn, skops.io, statsmodels.stats.proportion, pyarrow.parquet; "
        "import importlib.util; "
        "print(len(names), importlib.util.find_spec('feast') is not None)",
        timeout=300,
    )
    count, feast = out.split()
    return int(count), feast == "True"


def test_every_module_imports_in_the_image(serving_image: str) -> None:
    """The libraries' test folders and C sources were removed from the image: nothing that
    runs needed them. The Feast repository module needs the `features` extra, which the image
    does not carry (README "Feature store"): it must fail for that reason alone."""
    count, has_feast = _import_every_module(serving_image, but=FEAST_MODULE)
    assert count > 20
    assert not has_feast


def test_the_image_config(serving_image: str) -> None:
    image = pm.inspect("image", serving_image)
    config = image["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["sentiment"] and config["Cmd"] == ["serve"]
    assert "8000/tcp" in config["ExposedPorts"]
    assert "/var/lib/sentiment" in config["Volumes"]
    assert image["Healthcheck"]["Test"] == ["CMD", "sentiment", "health", "--timeout", "4"]


def test_the_features_image_holds_its_lock_and_feast(features_image: str) -> None:
    installed = _installed(features_image)
    assert installed == {*pins(FEATURES_LOCK), "sentiment-mlops"} - {"setuptools"}
    assert "feast" in installed and "mlflow" not in installed and "pip" not in installed
    count, has_feast = _import_every_module(features_image)  # the Feast repository too
    assert count > 20 and has_feast
    image = pm.inspect("image", features_image)
    assert image["Config"]["User"] == f"{UID}:{UID}"
    assert image["Config"]["Entrypoint"] == ["sentiment"]


def _prediction_log(var: Path) -> None:
    """A SQLite prediction log in `var` as the server writes it: carol's two predictions at
    @delta (the first given feedback) and dave's one at @united, in the last hours."""
    database = LogDatabase(Settings(var_dir=var).prediction_log_url(), BOUND)
    database.migrate()
    at = datetime.now(UTC) - timedelta(hours=3)
    made = [
        event(subject="carol", account="@delta", created_at=at),
        event(subject="carol", account="@delta", created_at=at + timedelta(hours=1)),
        event(subject="dave", account="@united", created_at=at + timedelta(hours=2)),
    ]
    # The key the server would generate in its volume, which the image's reader then uses.
    key = subject_key(Settings(var_dir=var, subject_key=None))
    database.insert([prediction_row(m, keep_text=False, subject_key=key) for m in made])
    database.add_feedback(made[0].prediction_id, "negative", at + timedelta(minutes=30))
    database.dispose()


def test_the_features_image_materialises_the_log_read_only_as_non_root(
    features_image: str, tmp_path: Path
) -> None:
    """`sentiment features materialize` in the image, as the CronJob runs it (read-only root,
    no network, the repository and its SQLite online store in the volume); then the online
    store answers in the image what serving reads for carol at @delta."""
    var = tmp_path / "var"
    var.mkdir()
    _prediction_log(var)
    for path in [var, *var.rglob("*")]:
        os.chown(path, int(UID), int(UID))
    run = [
        "run",
        "--rm",
        "--read-only",
        "--read-only-tmpfs=false",
        "--tmpfs=/tmp:rw,size=256m,mode=1777",
        "--network=none",
        f"--volume={var}:/var/lib/sentiment",
    ]
    done = pm.podman(*run, features_image, "features", "materialize", timeout=300)
    assert "Read 3 predictions from the log (1 with feedback)" in done, done
    assert "the feature store holds 3 events" in done, done
    read = (
        "import json; from sentiment_mlops.config import Settings; "
        "from sentiment_mlops.features.aggregates import FEATURES; "
        "from sentiment_mlops.features.repository import OnlineReader; "
        "print(json.dumps(OnlineReader(Settings(), FEATURES, 5.0).read('carol', '@delta')))"
    )
    online = json.loads(
        pm.podman(*run, "--entrypoint=python3", features_image, "-c", read, timeout=300)
        .strip()
        .splitlines()[-1]
    )
    assert online["user_tweets"] == 2 and online["user_negative_share"] == 1.0
    assert online["account_tweets_24h"] == 2 and online["account_negative_share_24h"] == 1.0
    repository = var / "features"
    assert {"registry.db", "online.db", "feature_store.yaml"} <= {
        p.name for p in repository.iterdir()
    }
    for path in repository.rglob("*"):
        assert path.stat().st_uid == int(UID), f"{path} is not owned by {UID}"


def test_the_mlflow_server_image_builds_and_has_the_ui() -> None:
    pm.build(DOCKER / "mlflow.Dockerfile", MLFLOW_TAG, DOCKER / "mlflow.lock")
    run = ["run", "--rm", "--read-only", "--entrypoint=python3", MLFLOW_TAG, "-c"]
    ui = pm.podman(*run, "import flask, mlflow, mlflow.server; print(mlflow.__version__)")
    assert ui.strip() == pins(DOCKER / "mlflow.lock")["mlflow"]
    assert pm.inspect("image", MLFLOW_TAG)["Config"]["User"] == "10002:10002"


def test_report_the_image_sizes(serving_image: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = pm.inspect("image", pm.BASE_IMAGE)["Size"]
    lines = [f"{pm.BASE_IMAGE} (the stand-in base): {base / 1e6:.0f} MB"]
    for tag in (serving_image, FEATURES_TAG, MLFLOW_TAG):
        if pm.image_exists(tag):
            size = pm.inspect("image", tag)["Size"]
            lines.append(f"{tag}: {size / 1e6:.0f} MB, {(size - base) / 1e6:.0f} MB above the base")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert pm.inspect("image", serving_image)["Size"] < SIZE_BUDGET
