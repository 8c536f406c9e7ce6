"""Building and running the project's images with podman, offline, for the container tests.

No Docker engine runs on the CI machines and no registry is reachable, so:
- the base image `python:3.11-slim` is a stand-in: Debian bookworm with python3, pip and venv
  made by debootstrap (from the Debian mirror, ~100 s once), imported into podman under that
  name, so the Dockerfiles build unchanged. The root filesystem is kept as a tarball in the
  cache and re-imported when podman's storage no longer has the image;
- the Python wheels are downloaded beforehand with pip (the lock file pins them) into the
  cache, and the build runs with `--network=none`, pip reading them from a mounted folder.
The cache (`SENTIMENT_CONTAINER_CACHE`, default /var/cache/sentiment-mlops) lives outside the
repository and is reused across runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SENTIMENT_CONTAINER_CACHE", "/var/cache/sentiment-mlops"))
BASE_IMAGE = "docker.io/library/python:3.11-slim"
BASE_TARBALL = "debian-bookworm-python3.tar"
DEBOOTSTRAP_PACKAGES = "python3,python3-pip,python3-venv,ca-certificates"
CONTAINERS_CONF = Path(__file__).with_name("containers.conf")


class PodmanError(RuntimeError):
    """A podman (or debootstrap, pip) command failed; the message holds its output's tail."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def run(
    command: Sequence[str], timeout: float = 600, check: bool = True, stderr: bool = False
) -> str:
    """Run a command with the containers config; its stdout (and stderr after it, with
    `stderr`), or PodmanError with its output."""
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, env=_env()
        )
    except subprocess.TimeoutExpired as exc:
        raise PodmanError(f"{' '.join(command)}: no result after {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        raise PodmanError(f"{' '.join(command)} exited {done.returncode}:\n{output}")
    return done.stdout + done.stderr if stderr else done.stdout


def podman(*args: str, timeout: float = 600, check: bool = True) -> str:
    return run(["podman", *args], timeout=timeout, check=check)


def missing_tools() -> list[str]:
    return [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]


def ensure_base_image() -> None:
    """`python:3.11-slim` in podman's storage: the cached stand-in, made first if needed."""
    if image_exists(BASE_IMAGE):
        return
    tarball = CACHE / BASE_TARBALL
    if not tarball.is_file():
        _debootstrap(tarball)
    podman("import", str(tarball), BASE_IMAGE, timeout=300)


def image_exists(image: str) -> bool:
    done = subprocess.run(["podman", "image", "exists", image], env=_env(), timeout=60)
    return done.returncode == 0


def _debootstrap(tarball: Path) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={DEBOOTSTRAP_PACKAGES}",
                "bookworm",
                str(rootfs),
            ],
            timeout=1200,
        )
        # What debian:bookworm-slim does not carry either: downloaded packages and indexes.
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftovers).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = tarball.with_suffix(".partial")
        run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], timeout=600)
        partial.rename(tarball)


def wheels_for(lock: Path) -> Path:
    """A folder with a wheel for every pin of `lock`, downloaded once per lock content."""
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    folder = CACHE / "wheels" / f"{lock.stem}-{digest}"
    done = folder / ".complete"
    if not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        # Wheels only: the build has no network and the image no compiler.
        run([*pip, "--only-binary=:all:", "--dest", str(folder), "-r", str(lock)], timeout=1800)
        done.touch()
    return folder


def build(
    dockerfile: Path,
    tag: str,
    lock: Path,
    timeout: float = 1800,
    build_args: dict[str, str] | None = None,
) -> None:
    """Build `dockerfile` (context: the repository) without network, pip reading the lock's
    wheels from a mounted folder. podman's layer cache makes an unchanged rebuild quick, and
    the layers before the lock is installed are shared by images of one Dockerfile."""
    ensure_base_image()
    wheels = wheels_for(lock)
    podman(
        "build",
        "--format=docker",  # OCI images drop HEALTHCHECK
        "--network=none",
        "--pull=never",
        f"--volume={wheels}:/wheels:ro",
        "--build-arg=PIP_NO_INDEX=1",
        "--build-arg=PIP_FIND_LINKS=/wheels",
        *(f"--build-arg={name}={value}" for name, value in (build_args or {}).items()),
        f"--file={dockerfile}",
        f"--tag={tag}",
        str(ROOT),
        timeout=timeout,
    )


def inspect(kind: str, name: str) -> Any:
    """`podman <kind> inspect NAME` as JSON (its first object)."""
    return json.loads(podman(kind, "inspect", name, timeout=60))[0]
