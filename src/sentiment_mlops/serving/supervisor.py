"""The parent of several workers: uvicorn's `Multiprocess`, plus what it leaves undone when a
worker dies.

uvicorn logs "Child process [pid] died" and starts another. This supervisor also:
- logs the death as JSON with the worker's pid, exit code or signal, and the cause;
- counts the restart (`server_worker_restarts_total{cause}` in /metrics);
- counts the predictions the dead worker still held in its prediction-log queue (its last
  reported `prediction_log_queue_depth`) as `prediction_log_dropped_total{reason=
  "worker_died"}`: a worker's queue is in its memory, so a crash loses it, and the loss is
  counted rather than silent;
- drops the dead worker's live gauges (`model_info`), which only a worker that stops cleanly
  drops itself: a killed worker's would be shown for ever;
- checks the metrics folder again before starting the replacement, so a folder that filled up
  (SIGBUS in prometheus_client's mapped files) leaves metrics unavailable instead of killing
  every replacement in turn.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from socket import socket

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from sentiment_mlops.serving.metrics import (
    WorkerLosses,
    WorkerRestarts,
    folder_problem,
    make_unavailable,
    mark_worker_dead,
    queued_in_dead_worker,
)

log = logging.getLogger("sentiment_mlops.serving.supervisor")


class Supervisor(Multiprocess):
    def __init__(
        self, config: uvicorn.Config, sockets: list[socket], metrics_folder: Path | None
    ) -> None:
        super().__init__(config, sockets)
        self.metrics_folder = metrics_folder
        self.metrics_available = metrics_folder is not None
        self.restarts = WorkerRestarts(metrics_folder)
        self.losses = WorkerLosses(metrics_folder)

    def keep_subprocess_alive(self) -> None:
        """uvicorn's loop over the workers (restart the dead and the hung), with the death on
        record before the replacement starts."""
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            hung = process.process.is_alive()
            process.kill()
            process.join()
            cause = self._record_death(process, hung)
            if process.exitcode == STARTUP_FAILURE:
                log.error("worker failed to start; stopping", extra={"worker_pid": process.pid})
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            self._check_metrics_folder()
            replacement = Process(self.config, self.sockets)
            replacement.start()
            self.processes[idx] = replacement
            log.warning(
                "worker restarted",
                extra={
                    "worker_pid": replacement.pid,
                    "replaced_pid": process.pid,
                    "cause": cause,
                    "restarts": self.restarts.add(cause),
                },
            )

    def _record_death(self, process: Process, hung: bool) -> str:
        """Log the death, forget the worker's live gauges; the cause, for the restart count."""
        code = process.exitcode
        signal_name = _signal_name(-code) if code is not None and code < 0 else None
        cause = "unresponsive" if hung else signal_name or f"exit {code}"
        lost = 0
        if process.pid is not None and self.metrics_folder is not None:
            lost = queued_in_dead_worker(self.metrics_folder, process.pid)
        log.error(
            "worker died",
            extra={
                "worker_pid": process.pid,
                "exit_code": code if code is None or code >= 0 else None,
                "signal": signal_name,
                "cause": cause,
                "predictions_lost": lost,
            },
        )
        if lost:
            self.losses.add(lost)
        if process.pid is not None:
            mark_worker_dead(process.pid, self.metrics_folder)
        return cause

    def _check_metrics_folder(self) -> None:
        if not self.metrics_available or self.metrics_folder is None:
            return
        problem = folder_problem(self.metrics_folder, len(self.processes))
        if problem is not None:
            self.metrics_available = False
            make_unavailable(problem)
            log.error("metrics unavailable for new workers", extra={"reason": problem})


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
