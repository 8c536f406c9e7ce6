"""Prometheus metrics of the API, correct with several worker processes.

With `PROMETHEUS_MULTIPROC_DIR` set (as `sentiment serve --workers N` does), every worker
writes its samples to files there and `/metrics` sums them over all workers, so a request
is counted once whichever worker served it. Without it, each `Metrics` owns its registry, so
several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import os

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

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# `*_created` series double the exposition and no dashboard of ours reads them.
disable_created_metrics()
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
INFERENCE_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1)
CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
LENGTH_BUCKETS = (10, 25, 50, 100, 200, 400, 800, 1600, 3200, 6400)


def multiprocess_dir() -> str | None:
    """The shared metrics folder when running several workers, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


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
            "Attempts to load a newly aliased version, by alias and result.",
            ["variant", "result"],
            registry=r,
        )
        self.registry_errors = Counter(
            "model_registry_errors_total",
            "Registry calls that failed, by operation (resolve, load) and reason (unreachable, "
            "timeout, error); a version refused after loading counts in model_reloads_total.",
            ["operation", "reason"],
            registry=r,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The text format for `/metrics`: all workers' samples when in multiprocess mode."""
        folder = multiprocess_dir()
        if folder is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=folder)
        return generate_latest(merged), CONTENT_TYPE_LATEST


def mark_worker_dead() -> None:
    """Let live-gauges forget this worker when it exits (multiprocess mode only)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())
