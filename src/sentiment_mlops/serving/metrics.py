"""Prometheus metrics of the API, correct with several worker processes.

With `PROMETHEUS_MULTIPROC_DIR` set (as `sentiment serve --workers N` does), every worker
writes its samples to files there and `/metrics` sums them over all workers, so a request
is counted once whichever worker served it. Without it, each `Metrics` owns its registry, so
several apps in one process (tests) do not collide.

prometheus_client maps those files into memory: a write into a page the disk has no room for
kills the worker with SIGBUS. So the folder is checked for room before workers start
(`folder_problem`); without it the parent sets `SENTIMENT_METRICS_UNAVAILABLE` instead, workers
record in their own memory only, and `/metrics` answers 503 with the reason.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict

log = logging.getLogger("sentiment_mlops.serving.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNAVAILABLE_ENV = "SENTIMENT_METRICS_UNAVAILABLE"
# Room asked for each worker's files, and for one replacement's. Measured: two workers' files
# held 44 KiB after a short run; each file starts at 64 KiB (sparse) and doubles when full.
FREE_BYTES_PER_WORKER = 1 << 20
RESTARTS_FILE = "worker_restarts.json"
# Predictions a dead worker still held in its prediction-log queue, as the parent found them.
LOSSES_FILE = "worker_losses.json"
QUEUE_DEPTH = "prediction_log_queue_depth"
# `*_created` series double the exposition and no dashboard of ours reads them.
disable_created_metrics()
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
INFERENCE_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1)
CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
LENGTH_BUCKETS = (10, 25, 50, 100, 200, 400, 800, 1600, 3200, 6400)


class MetricsUnavailable(RuntimeError):
    """The metrics cannot be shown; the message says why."""


def multiprocess_dir() -> str | None:
    """The shared metrics folder when running several workers, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


def folder_problem(folder: Path, workers: int) -> str | None:
    """Why `folder` cannot hold the metric files of `workers` workers, or None if it can."""
    try:
        stats = os.statvfs(folder)
    except OSError as exc:
        return f"{folder}: {exc.strerror}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    free = stats.f_bavail * stats.f_frsize
    needed = FREE_BYTES_PER_WORKER * (workers + 1)
    if free < needed:
        return f"{folder} has {free} bytes free; {workers} worker(s) need {needed}"
    return None


def share_through(folder: Path) -> None:
    """Let workers started from now on share their metrics through `folder`."""
    os.environ.pop(UNAVAILABLE_ENV, None)
    os.environ[MULTIPROC_ENV] = str(folder)


def make_unavailable(reason: str) -> None:
    """Workers started from now on keep metrics in memory and answer /metrics with 503."""
    os.environ.pop(MULTIPROC_ENV, None)
    os.environ[UNAVAILABLE_ENV] = reason


def clear_folder(folder: Path) -> None:
    """Remove a previous run's metric files (prometheus_client's files and ours)."""
    for path in [*folder.glob("*.db"), folder / RESTARTS_FILE, folder / LOSSES_FILE]:
        path.unlink(missing_ok=True)


class Metrics:
    """The metric families named in ARCHITECTURE.md that the API records."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.predictions = Counter(
            "model_predictions_total",
            "Predictions served, by model version, variant and predicted label.",
            ["model_version", "variant", "label"],
            registry=r,
        )
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests, by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "http_request_duration_seconds",
            "Time from request received to response sent, by route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "model_inference_duration_seconds",
            "Time spent scoring one request's texts.",
            ["model_version", "variant"],
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.confidence = Histogram(
            "model_prediction_confidence",
            "Probability of the predicted label.",
            ["model_version", "variant"],
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.input_length = Histogram(
            "model_input_length_chars",
            "Length of scored texts in characters.",
            ["model_version", "variant"],
            buckets=LENGTH_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "model_info",
            "1 for each model version a worker currently serves, with its alias and hash.",
            ["model_version", "variant", "sha256", "scorer"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.reloads = Counter(
            "model_reloads_total",
            "Attempts to load a newly aliased version, by alias and result: success, failure, "
            "or slow (past SENTIMENT_MODEL_LOAD_TIMEOUT_SECONDS and let finish).",
            ["variant", "result"],
            registry=r,
        )
        self.routing_reloads = Counter(
            "routing_reloads_total",
            "Routing configs that differed from the one in effect, by result: applied, or "
            "refused (invalid, an alias not set, or a variant without a model; the one in "
            "effect keeps serving). A refused file is counted at each reload while it stays.",
            ["result"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "model_shadow_dropped_total",
            "Shadow predictions not made, by shadow variant and reason: busy (too many in "
            "flight), error (the shadow model raised), no_model (the shadow alias has none).",
            ["variant", "reason"],
            registry=r,
        )
        self.feature_defaults = Counter(
            "model_feature_defaults_total",
            "Requests to a model with entity features scored with defaults for an entity "
            "(user, account), by variant and reason: no_key (not in the request), "
            "unknown_entity (the online store has no history for it), unavailable (the store "
            "failed), timeout (no answer within SENTIMENT_FEATURES_LOOKUP_TIMEOUT_SECONDS).",
            ["variant", "entity", "reason"],
            registry=r,
        )
        self.registry_errors = Counter(
            "model_registry_errors_total",
            "Registry calls that failed, by operation (resolve, load) and reason (unreachable, "
            "timeout, error); a version refused after loading counts in model_reloads_total.",
            ["operation", "reason"],
            registry=r,
        )

        self.feedback = Counter(
            "model_feedback_total",
            "Feedback joined to predictions (repeats not counted), by the model version and "
            "variant that made the prediction and whether its label was the true one.",
            ["model_version", "variant", "correct"],
            registry=r,
        )
        self.log_queue_depth = Gauge(
            "prediction_log_queue_depth",
            "Predictions waiting to be written to the prediction log (all live workers).",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.log_dropped = Counter(
            "prediction_log_dropped_total",
            "Predictions never written to the prediction log, by reason: queue_full (the "
            "database was slow or down and the queue full), shutdown (still queued when the "
            "flush at shutdown ran out of time), rejected (the database refused the row), "
            "worker_died (queued in a worker that died: its last reported queue depth).",
            ["reason"],
            registry=r,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The text format for `/metrics`: all workers' samples when in multiprocess mode,
        and the parent's count of restarted workers. MetricsUnavailable if the parent found
        no room for the metric files."""
        reason = os.environ.get(UNAVAILABLE_ENV)
        if reason:
            raise MetricsUnavailable(reason)
        folder = multiprocess_dir()
        if folder is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        merged = CollectorRegistry()
        merged.register(
            _WithWorkerLosses(multiprocess.MultiProcessCollector(None, path=folder), Path(folder))
        )
        merged.register(WorkerRestarts(Path(folder)))
        return generate_latest(merged), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int, folder: str | Path | None) -> None:
    """Let live gauges forget a worker that exited (multiprocess mode only); the worker calls
    this as it stops, the parent when it finds one dead."""
    if folder is not None:
        multiprocess.mark_process_dead(pid, str(folder))


class ParentCounts:
    """Counts the parent keeps, by key, in a JSON file of the shared metrics folder: the
    parent records no metrics of its own, and whichever worker answers /metrics reads them
    back there. Written whole (a temporary file replaced), so a reader never sees half."""

    def __init__(self, folder: Path | None, name: str, what: str) -> None:
        self.path = folder / name if folder is not None else None
        self.what = what  # for the log line when a count cannot be written
        self.counts: dict[str, int] = {}  # the parent's, as it adds them

    def read(self) -> dict[str, int]:
        if self.path is None:
            return {}
        try:
            counts = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else {}

    def add(self, key: str, amount: int = 1) -> dict[str, int]:
        """Add `amount` under `key`; all the counts. One that cannot be written is logged."""
        self.counts[key] = self.counts.get(key, 0) + amount
        if self.path is not None:
            temporary = self.path.with_suffix(".tmp")
            try:
                temporary.write_text(json.dumps(self.counts))
                temporary.replace(self.path)
            except OSError as exc:
                log.warning(f"cannot record {self.what}", extra={"error": str(exc)})
        return dict(self.counts)


class WorkerRestarts:
    """`server_worker_restarts_total{cause}`: workers the parent replaced after they died,
    counted in `RESTARTS_FILE` (`ParentCounts`) and collected from there."""

    def __init__(self, folder: Path | None) -> None:
        self.file = ParentCounts(folder, RESTARTS_FILE, "a worker restart")

    def read(self) -> dict[str, int]:
        return self.file.read()

    def add(self, cause: str) -> int:
        """Count one restart; the new total."""
        return sum(self.file.add(cause).values())

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "server_worker_restarts",
            "Worker processes the parent replaced after they died, by cause.",
            labels=["cause"],
        )
        for cause, count in sorted(self.read().items()):
            family.add_metric([cause], count)
        yield family


def queued_in_dead_worker(folder: Path, pid: int) -> int:
    """The prediction-log queue depth a worker last reported, read from its live-gauge file
    before the parent drops it: the rows a killed worker took with it (rows leave the queue
    once written, so a batch committed just before the kill counts too: an upper bound)."""
    path = folder / f"gauge_livesum_{pid}.db"
    try:
        values = MmapedDict.read_all_values_from_file(str(path))
    except (FileNotFoundError, ValueError, OSError):
        return 0
    return int(sum(value for key, value, *_ in values if json.loads(key)[0] == QUEUE_DEPTH))


class WorkerLosses:
    """Predictions lost with dead workers, written by the parent to `LOSSES_FILE` in the
    shared folder (like `WorkerRestarts`) and shown as `prediction_log_dropped_total{reason=
    "worker_died"}` by whichever worker answers /metrics."""

    KEY = "prediction_log"

    def __init__(self, folder: Path | None) -> None:
        self.file = ParentCounts(folder, LOSSES_FILE, "lost predictions")

    def read(self) -> int:
        return self.file.read().get(self.KEY, 0)

    def add(self, rows: int) -> int:
        """Count `rows` lost; the new total."""
        return self.file.add(self.KEY, rows)[self.KEY]


class _WithWorkerLosses:
    """The workers' samples, with the parent's count of rows lost in dead workers added to
    `prediction_log_dropped_total` (one family: a second one of that name would be invalid)."""

    def __init__(self, workers: multiprocess.MultiProcessCollector, folder: Path) -> None:
        self.workers = workers
        self.losses = WorkerLosses(folder)

    def collect(self) -> Iterator[Metric]:
        lost = self.losses.read()
        seen = False
        for metric in self.workers.collect():
            if metric.name == "prediction_log_dropped" and lost:
                metric.add_sample("prediction_log_dropped_total", {"reason": "worker_died"}, lost)
                seen = True
            yield metric
        if lost and not seen:
            family = CounterMetricFamily(
                "prediction_log_dropped",
                "Predictions never written to the prediction log.",
                labels=["reason"],
            )
            family.add_metric(["worker_died"], lost)
            yield family
