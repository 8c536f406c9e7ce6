"""Importing Feast without letting it switch this process's Prometheus metrics.

`import feast` (through `feast.metrics`) sets `PROMETHEUS_MULTIPROC_DIR` and
`PROMETHEUS_MULTIPROCESS_DIR` in `os.environ` to a temporary folder of its own when they are
unset. The server reads `PROMETHEUS_MULTIPROC_DIR` to decide whether `/metrics` merges
several workers' files, and prometheus_client picks its value storage from them when first
imported; so once a one-worker server opened the feature store it would have answered
`/metrics` from Feast's folder, not its own metrics (and tests that clear the variables
crashed creating a metric). This imports prometheus_client first, then feast, and restores
the environment. Every import of feast in the project goes through here first.
"""

from __future__ import annotations

import importlib

from sentiment_mlops.runtime import restored_environment

_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


def feast_imported() -> None:
    """Import feast (once) leaving the Prometheus variables as they were; ImportError
    without the `features` extra."""
    importlib.import_module("prometheus_client")
    with restored_environment(*_VARIABLES):
        importlib.import_module("feast")
