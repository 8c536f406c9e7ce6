"""A real Dask cluster on loopback for the tuning tests: `dask scheduler` and `dask worker`
processes, as an operator starts them, importing this checkout's code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client

from sentiment_mlops.serving.launcher import free_port

SRC = Path(__file__).resolve().parents[2] / "src"
DASK = Path(sys.executable).parent / "dask"


@dataclass
class DaskCluster:
    """A scheduler and its workers, each a process of ours; `stop` ends them all."""

    address: str
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def start(cls, folder: Path, workers: int) -> DaskCluster:
        port = free_port()
        cluster = cls(f"tcp://127.0.0.1:{port}", folder)
        cluster._spawn(
            "scheduler",
            ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        )
        for number in range(1, workers + 1):
            # No nanny: a killed worker stays dead, as a lost machine would.
            cluster._spawn(
                f"worker-{number}",
                [
                    "worker",
                    cluster.address,
                    "--name",
                    f"worker-{number}",
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                ],
            )
        with Client(cluster.address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        return cluster

    def _spawn(self, name: str, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        log = (self.logs / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [str(DASK), *args], stdout=log, stderr=subprocess.STDOUT, env=env
        )

    def worker_addresses(self) -> dict[str, str]:
        """Worker name -> address, as the scheduler knows them."""
        with Client(self.address, timeout=30) as client:
            info = client.scheduler_info(n_workers=-1)["workers"]
        return {str(w["name"]): address for address, w in info.items()}

    def kill(self, name: str) -> None:
        """SIGKILL one process: no goodbye to the scheduler."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        """Workers first, while the scheduler can still take their goodbye; a process that
        has not exited 10 s after SIGTERM is killed (the survivor of a killed worker
        sometimes took 30 s)."""
        for name in sorted(self.processes, key=lambda n: n == "scheduler"):
            process = self.processes[name]
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=30)
