"""Hyperparameter search with cross-validation on Dask (`sentiment tune`).

`space` turns configs/tune.yaml into numbered trials; `work` is what the workers compute and
which stages trials share; `search` builds the Dask graph and collects the trials as they
finish; `cluster` connects to a scheduler or starts a local cluster; `progress` shows the
search; `compare` decides whether the refitted best beats the champion. Nothing here imports
mlflow: the CLI records trials through `registry.Registry`. Import each name from the module
that defines it; this package re-exports nothing.
"""
