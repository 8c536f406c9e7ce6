"""A PostgreSQL cluster of a test's own: its own data directory and port, started, stopped
hard, frozen and restarted at will (the machine's shared server must not be stopped by a test).

initdb and pg_ctl come from Debian's server package (/usr/lib/postgresql/<version>/bin);
PostgreSQL refuses to run as root, so under root they run as the `postgres` OS user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sentiment_mlops.serving.launcher import free_port

from ..processes import descendants

HOST = "127.0.0.1"


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL server's bin folder, if any."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def missing() -> str | None:
    """Why no cluster can be made here (for a skip), or None."""
    if server_binaries() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


def _wait_stopped(pid: int, timeout: float = 30.0) -> None:
    """Until `pid` is in the stopped state (or gone): SIGSTOP takes effect asynchronously."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return
        if state in ("T", "t", "Z", "X"):
            return
        time.sleep(0.01)
    raise RuntimeError(f"process {pid} did not stop within {timeout:g} s of SIGSTOP")


class Cluster:
    """initdb into a fresh temporary folder; `start`, `crash`, `frozen`, `stop`, `remove`."""

    def __init__(self) -> None:
        binaries = server_binaries()
        assert binaries is not None, missing()
        self._bin = binaries
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="sentiment-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            self._as_owner = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@{HOST}:{self.port}/{database}"

    def _run(self, program: str, *args: str) -> None:
        command = [*self._as_owner, str(self._bin / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} failed: {result.stdout}{result.stderr}\n{tail}")

    def start(self) -> None:
        """Start on the cluster's port (the same one every time) and wait until it answers."""
        options = (
            f"-p {self.port} -c listen_addresses={HOST} -k {self.data} -c fsync=off "
            "-c max_connections=50"
        )
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "120",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
        )

    def crash(self) -> None:
        """Stop at once, as a crash would: no shutdown checkpoint, connections cut."""
        self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def processes(self) -> list[int]:
        """The running cluster's postmaster, then every process under it (backends and
        auxiliary processes)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        return [postmaster, *descendants(postmaster)]

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Every process of the cluster stopped (SIGSTOP) while the block runs, as on a hung
        host: connections stay open and the kernel still acknowledges what clients send, but
        nothing answers, and the server's own timeouts cannot fire. Continued (SIGCONT) on
        every way out of the block, whatever stopped part-way."""
        stopped: list[int] = []
        try:
            # the postmaster first and stopped before its children are listed, so it forks
            # none the listing misses; listed again until no new process shows up
            found = self.processes()
            while new := [pid for pid in found if pid not in stopped]:
                for pid in new:
                    stopped.append(pid)  # before the signal: continued whatever happens next
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)
                for pid in new:
                    _wait_stopped(pid)
                found = self.processes()
            yield
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def remove(self) -> None:
        """Stop if running, and delete the data directory."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))
        shutil.rmtree(self.base, ignore_errors=True)
