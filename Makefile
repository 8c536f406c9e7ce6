# Two commands: `make run` and `make test`. Both install what they need into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The MLflow UI needs the full mlflow (Flask and the web app, ~850 MB): its own venv, kept out
# of the serving install, at the version of the project's mlflow-skinny.
UI_VENV  ?= .venv-ui
UI_PORT  ?= 5000
MLFLOW_VERSION := $(shell sed -n 's/^ *"mlflow-skinny==\([^"]*\)".*/\1/p' pyproject.toml)
UI_STAMP := $(UI_VENV)/.installed-mlflow-$(MLFLOW_VERSION)
# checkov scans the Kubernetes manifests and the Dockerfiles in the tests; its pins (packaging,
# boto3, ...) clash with the project's, so it gets a venv of its own, made by `make test`.
CHECKOV_VENV    ?= .venv-checkov
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP   := $(CHECKOV_VENV)/.installed-checkov-$(CHECKOV_VERSION)
# Feast (the `features` extra) pins pandas<3 and prometheus-client<0.25, older than the core
# install: the feature-store tests run in a venv of their own, made by `make test`, with the
# project installed editable so both venvs test the same code.
FEATURES_VENV  ?= .venv-features
FEATURES_STAMP := $(FEATURES_VENV)/.installed-features
LOCK_VENV ?= .venv-lock
ENGINE    ?= docker
IMAGE     ?= localhost/sentiment-mlops:local
FEATURES_IMAGE ?= localhost/sentiment-mlops-features:local


.PHONY: install run train test test-features lint bench bench-serving ui test-ui image image-features lock lock-features test-container clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(UI_STAMP):
	$(PYTHON) -m venv $(UI_VENV)
	$(UI_VENV)/bin/pip install --quiet --upgrade pip
	$(UI_VENV)/bin/pip install --quiet 'mlflow==$(MLFLOW_VERSION)' 'psycopg2-binary>=2.9'
	touch $(UI_STAMP)

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $(CHECKOV_STAMP)

$(FEATURES_STAMP): pyproject.toml
	$(PYTHON) -m venv $(FEATURES_VENV)
	$(FEATURES_VENV)/bin/pip install --quiet --upgrade pip
	$(FEATURES_VENV)/bin/pip install --quiet -e '.[dev,features]'
	touch $(FEATURES_STAMP)

## run: train on the built-in dataset unless a champion exists, then serve on port 8000
run: install
	$(BIN)/sentiment serve --train-if-missing --port 8000

train: install
	$(BIN)/sentiment train

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint $(CHECKOV_STAMP) $(FEATURES_STAMP)
	SENTIMENT_TEST_CHECKOV=$(CHECKOV_VENV)/bin/checkov $(BIN)/pytest
	$(FEATURES_VENV)/bin/pytest tests/features

## test-features: only the feature-store tests, in .venv-features (Feast, pandas 2)
test-features: $(FEATURES_STAMP)
	$(FEATURES_VENV)/bin/pytest tests/features

## bench: model accuracy on public datasets, compiled vs sklearn scoring cost, A/B tests under peeking, tuning on 1 and 2 Dask workers
bench: install
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/scorer.py
	$(BIN)/python benchmarks/ab_peeking.py
	$(BIN)/python benchmarks/tune.py

## bench-serving: requests/s and p50/p99 latency of the HTTP API under wrk, and what a hot swap costs it (installs wrk if missing)
bench-serving: install
	command -v wrk || (apt-get update && apt-get install -y wrk)
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/hot_swap.py

## ui: the MLflow UI over the project's store (runs, plots, models) on 127.0.0.1:$(UI_PORT)
ui: install $(UI_STAMP)
	$(BIN)/python -m sentiment_mlops.ui --mlflow $(UI_VENV)/bin/mlflow --port $(UI_PORT)

## test-ui: train into a temporary store and check in Chromium that the MLflow UI shows it
test-ui: install $(UI_STAMP)
	command -v chromium || (apt-get update && apt-get install -y chromium)
	SENTIMENT_TEST_MLFLOW=$(UI_VENV)/bin/mlflow $(BIN)/pytest -m ui

## image: build the serving image from deploy/docker/Dockerfile (make image ENGINE=podman)
image:
	$(ENGINE) build -f deploy/docker/Dockerfile -t $(IMAGE) .

## image-features: the same image with the `features` extra (Feast), from requirements-features.lock
image-features:
	$(ENGINE) build -f deploy/docker/Dockerfile --build-arg LOCK=requirements-features.lock \
		-t $(FEATURES_IMAGE) .

## test-container: build the images with podman, offline, and run the serving one (minutes)
test-container: install
	$(BIN)/pytest -m container

## lock: re-pin the images' dependencies (deploy/docker/*.lock) from clean installs
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip 'setuptools>=69'
	$(LOCK_VENV)/bin/pip install --quiet .
	{ grep '^#' deploy/docker/requirements.lock; \
	  $(LOCK_VENV)/bin/pip freeze --all --exclude sentiment-mlops --exclude pip; \
	} > deploy/docker/requirements.lock.new
	mv deploy/docker/requirements.lock.new deploy/docker/requirements.lock
	$(MAKE) lock-features
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet 'mlflow==$(MLFLOW_VERSION)' 'psycopg2-binary>=2.9'
	{ grep '^#' deploy/docker/mlflow.lock; \
	  $(LOCK_VENV)/bin/pip freeze --exclude pip --exclude setuptools; \
	} > deploy/docker/mlflow.lock.new
	mv deploy/docker/mlflow.lock.new deploy/docker/mlflow.lock
	rm -rf $(LOCK_VENV)

## lock-features: re-pin the features image's dependencies (requirements-features.lock) alone
# redis needs async-timeout on Python < 3.11.3 only (Debian bookworm's python3 is 3.11.2: the
# container tests' stand-in base); pinned always, so one lock installs on every 3.11.
lock-features:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip 'setuptools>=69'
	$(LOCK_VENV)/bin/pip install --quiet '.[features]' 'async-timeout>=4.0.3'
	{ grep '^#' deploy/docker/requirements-features.lock; \
	  $(LOCK_VENV)/bin/pip freeze --all --exclude sentiment-mlops --exclude pip; \
	} > deploy/docker/requirements-features.lock.new
	mv deploy/docker/requirements-features.lock.new deploy/docker/requirements-features.lock

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
