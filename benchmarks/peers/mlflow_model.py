"""Which model `mlflow models serve` can serve for benchmarks/peers.py, run in the MLflow
peer's virtualenv:

    python mlflow_model.py TRACKING_URI MODEL_URI MODEL_SKOPS TEXT SPARE_TRACKING_URI

Parses `{"inputs": [TEXT]}` as MLflow's scoring server does (against the model's signature)
and predicts with the registered version through pyfunc. If that fails, logs the same fitted
pipeline (the skops file) with `mlflow.sklearn.log_model`, no signature, registered in the
store at SPARE_TRACKING_URI. Prints one JSON object: the tracking URI and model URI to serve,
and why the registered version was not served, if it was not.
"""

from __future__ import annotations

import json
import sys

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import skops.io
from mlflow.pyfunc.scoring_server import infer_and_parse_data


def main() -> None:
    tracking_uri, model_uri, skops_path, text, spare_uri = sys.argv[1:6]
    mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
        model.predict(infer_and_parse_data({"inputs": [text]}, model.metadata.get_input_schema()))
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    else:
        print(json.dumps({"tracking_uri": tracking_uri, "model_uri": model_uri, "reason": None}))
        return
    pipeline = skops.io.load(skops_path, trusted=skops.io.get_untrusted_types(file=skops_path))
    mlflow.set_tracking_uri(spare_uri)
    name = model_uri.split("/")[1]
    logged = mlflow.sklearn.log_model(
        pipeline,
        name="model",
        serialization_format="skops",
        registered_model_name=name,
        pip_requirements=[],
    )
    served = f"models:/{name}/{logged.registered_model_version}"
    print(json.dumps({"tracking_uri": spare_uri, "model_uri": served, "reason": reason}))


if __name__ == "__main__":
    main()
