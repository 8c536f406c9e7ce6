"""A model version's files: the pipeline as compressed skops, described by MLflow's sklearn
flavour (MLmodel, requirements, environments), so `mlflow.sklearn.load_model` reads it too; and
loading it back refusing any type outside skops' trusted set and the project's own.

The registry (registry.py) hashes what `save` wrote and checks the hash before `load` reads a
byte. skops, scikit-learn and MLflow's model modules are imported here on use only.
"""

from __future__ import annotations

import platform
import zipfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

MODEL_FILE = "model.skops"
REQUIREMENTS_FILE = "requirements.txt"
PYTHON_ENV_FILE = "python_env.yaml"
CONDA_FILE = "conda.yaml"


def save(pipeline: Pipeline, directory: Path) -> None:
    """The model as compressed skops, described by MLflow's sklearn flavour files.

    `mlflow.sklearn.load_model("models:/sentiment@champion")` reads the result. It is written
    here rather than by `mlflow.sklearn.save_model`, which serialises the model itself,
    uncompressed (about 20x larger), and loads it back to check it: with our compressed copy,
    three passes over SST-2's 74k-term vocabulary took ~8 s; one dump and a type audit ~4 s.
    Like it, this refuses a pipeline holding types outside skops' trusted set, which could
    not be loaded again.
    """
    import mlflow
    import numpy as np
    import sklearn
    import skops.io
    from mlflow.models import Model
    from mlflow.models.signature import ModelSignature
    from mlflow.pyfunc import add_to_model
    from mlflow.types.schema import Schema, TensorSpec

    from sentiment_mlops.registry import RegistryError  # registry.py imports this module

    directory.mkdir(parents=True)
    path = directory / MODEL_FILE
    skops.io.dump(pipeline, path, compression=zipfile.ZIP_DEFLATED, compresslevel=1)
    untrusted = untrusted_types(path)
    if untrusted:
        raise RegistryError(
            f"cannot register this pipeline: it holds types outside skops' trusted set "
            f"({', '.join(untrusted)}), so it could not be loaded again"
        )
    # Texts in, labels out, each a 1-D tensor of strings: with a column schema, pyfunc (and
    # so `mlflow models serve`) handed the pipeline a DataFrame, and the vectorizer read its
    # column labels as the texts.
    texts = Schema([TensorSpec(np.dtype(object), (-1,))])
    model = Model(signature=ModelSignature(inputs=texts, outputs=texts))
    add_to_model(
        model,
        loader_module="mlflow.sklearn",
        model_path=MODEL_FILE,
        conda_env=CONDA_FILE,
        python_env=PYTHON_ENV_FILE,
        predict_fn="predict",
    )
    model.add_flavor(
        "sklearn",
        pickled_model=MODEL_FILE,
        sklearn_version=sklearn.__version__,
        serialization_format="skops",
        code=None,
        # The project's own types in this file, so that mlflow.sklearn.load_model (with this
        # package installed) loads it too.
        skops_trusted_types=skops.io.get_untrusted_types(file=path) or None,
    )
    model.model_size_bytes = path.stat().st_size
    model.save(str(directory / "MLmodel"))
    requirements = [
        f"mlflow=={mlflow.__version__}",
        *(f"{name}=={metadata.version(name)}" for name in ("scikit-learn", "skops")),
    ]
    (directory / REQUIREMENTS_FILE).write_text("\n".join(requirements), encoding="utf-8")
    python = platform.python_version()
    environments = {
        PYTHON_ENV_FILE: {
            "python": python,
            "build_dependencies": ["pip", "setuptools", "wheel"],
            "dependencies": [f"-r {REQUIREMENTS_FILE}"],
        },
        CONDA_FILE: {
            "name": "mlflow-env",
            "channels": ["conda-forge"],
            "dependencies": [f"python={python}", "pip", {"pip": requirements}],
        },
    }
    for name, content in environments.items():
        (directory / name).write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")


def untrusted_types(path: Path) -> list[str]:
    """Types in a skops file outside skops' trusted set and the project's own
    (`model.TRUSTED_TYPES`): a file holding any of them is neither saved nor loaded."""
    import skops.io

    from sentiment_mlops.model import TRUSTED_TYPES

    return [name for name in skops.io.get_untrusted_types(file=path) if name not in TRUSTED_TYPES]


def load(path: Path) -> Pipeline:
    import skops.io
    from sklearn.pipeline import Pipeline

    from sentiment_mlops.model import TRUSTED_TYPES
    from sentiment_mlops.registry import IntegrityError  # registry.py imports this module

    untrusted = untrusted_types(path)
    if untrusted:
        raise IntegrityError(
            f"refusing to load {path.name}: it contains types outside the trusted set: "
            f"{', '.join(untrusted)}"
        )
    model = skops.io.load(path, trusted=list(TRUSTED_TYPES))
    if not isinstance(model, Pipeline):
        raise IntegrityError(f"{path.name} holds a {type(model).__name__}, not a Pipeline")
    return model
