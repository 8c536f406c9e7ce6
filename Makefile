# Two commands: `make run` and `make test`. Both install what they need into .venv first, from
# locks (requirements/*.lock, deploy/docker/*.lock) with uv: an upstream release never changes
# what a fresh clone installs; upgrading a dependency is `make lock` and a commit.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# uv installs every venv from its lock (`uv pip sync`: exactly the lock, nothing left over) and
# makes the locks (`make lock`). It lives in a venv of its own, so no sync removes it.
UV_VERSION := 0.13.10
UV_VENV    ?= .venv-uv
UV         := $(UV_VENV)/bin/uv
UV_STAMP   := $(UV_VENV)/.installed-uv-$(UV_VERSION)
# Every lock is for the images' platform: CPython 3.11 on linux x86_64.
LOCK_FOR := --python-version 3.11 --python-platform x86_64-unknown-linux-gnu
UPGRADE  ?= --upgrade
# The development venvs: the image's lock plus the `dev` extra, constrained to the image's pins
# so tests run the versions the image ships (tests/deploy/test_lock.py checks it).
DEV_LOCK          := requirements/dev.lock
FEATURES_DEV_LOCK := requirements/features-dev.lock
SERVING_LOCK      := deploy/docker/requirements.lock
FEATURES_LOCK     := deploy/docker/requirements-features.lock
MLFLOW_LOCK       := deploy/docker/mlflow.lock
# The MLflow UI needs the full mlflow (Flask and the web app, ~850 MB): its own venv, kept out
# of the serving install, from the MLflow image's lock (the project's mlflow-skinny version).
UI_VENV  ?= .venv-ui
UI_PORT  ?= 5000
MLFLOW_VERSION := $(shell sed -n 's/^ *"mlflow-skinny==\([^"]*\)".*/\1/p' pyproject.toml)
UI_STAMP := $(UI_VENV)/.installed
# checkov scans the Kubernetes manifests and the Dockerfiles in the tests; its pins (packaging,
# boto3, ...) clash with the project's, so it gets a venv and a lock of its own.
CHECKOV_VENV    ?= .venv-checkov
CHECKOV_VERSION := 3.3.30
CHECKOV_LOCK    := requirements/checkov.lock
CHECKOV_STAMP   := $(CHECKOV_VENV)/.installed
# Feast (the `features` extra) pins pandas<3 and prometheus-client<0.25, older than the core
# install: the feature-store tests run in a venv of their own, made by `make test`, with the
# project installed editable so both venvs test the same code.
FEATURES_VENV  ?= .venv-features
FEATURES_STAMP := $(FEATURES_VENV)/.installed
ENGINE    ?= docker
IMAGE     ?= localhost/sentiment-mlops:local
FEATURES_IMAGE ?= localhost/sentiment-mlops-features:local


.PHONY: install run train test test-features lint bench bench-serving bench-peers ui test-ui image image-features lock test-container clean

$(UV_STAMP):
	rm -rf $(UV_VENV) && $(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install --quiet 'uv==$(UV_VERSION)'
	touch $@

# $(call sync,VENV,LOCK): make VENV hold exactly what LOCK pins, compiled to bytecode as pip
# does (uv does not by default): where PYTHONDONTWRITEBYTECODE is set, as on these machines,
# nothing else ever writes the .pyc files, and every process compiled every module it
# imported (3.3 s of an 8 s `sentiment predict`).
define sync
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(1)
	$(UV) pip sync --quiet --compile-bytecode --python $(1)/bin/python $(2)
endef

# The project itself goes in editable, without dependencies (the lock has them all) and without
# build isolation (the lock has setuptools): nothing is resolved or fetched beyond the lock.
$(STAMP): $(DEV_LOCK) pyproject.toml | $(UV_STAMP)
	$(call sync,$(VENV),$(DEV_LOCK))
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

$(UI_STAMP): $(MLFLOW_LOCK) | $(UV_STAMP)
	$(call sync,$(UI_VENV),$(MLFLOW_LOCK))
	touch $@

$(CHECKOV_STAMP): $(CHECKOV_LOCK) | $(UV_STAMP)
	$(call sync,$(CHECKOV_VENV),$(CHECKOV_LOCK))
	touch $@

$(FEATURES_STAMP): $(FEATURES_DEV_LOCK) pyproject.toml | $(UV_STAMP)
	$(call sync,$(FEATURES_VENV),$(FEATURES_DEV_LOCK))
	$(UV) pip install --quiet --compile-bytecode --python $(FEATURES_VENV)/bin/python --no-deps --no-build-isolation -e .
	touch $@

## run: train on the built-in dataset unless a champion exists, then serve on port 8000
run: install
	$(BIN)/sentiment serve --train-if-missing --port 8000

train: install
	$(BIN)/sentiment train

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# pytest-xdist: the test files are spread over TEST_WORKERS processes, each file whole on one
# (--dist loadfile), so a module's servers, registries and PostgreSQL clusters start once.
# (--dist loadgroup does not group with pytest 9.2: xdist 3.8 renames items through an
# attribute pytest no longer reads.) TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2

test: lint $(CHECKOV_STAMP) $(FEATURES_STAMP)
	SENTIMENT_TEST_CHECKOV=$(CHECKOV_VENV)/bin/checkov $(BIN)/pytest -n $(TEST_WORKERS) \
		--dist loadfile --durations=30
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

## bench-peers: our server beside a plain FastAPI app, `mlflow models serve` and BentoML on the same model and SST-2 texts, 1 and 2 workers, feature costs and batches (~12 min; installs wrk, and each peer into var/bench-peers/)
bench-peers: install | $(UV_STAMP)
	command -v wrk || (apt-get update && apt-get install -y wrk)
	$(BIN)/python benchmarks/peers.py

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

## lock: re-pin every lock at once (the images', then the development venvs' to match them);
## `make lock UPGRADE=` only adds what pyproject.toml gained, keeping every existing pin
# Each lock keeps its leading comment lines. The images' locks carry setuptools (the build
# backend, removed from the image after the install); the development locks add pip (the
# container tests download the images' wheels with it). redis needs async-timeout on Python
# < 3.11.3 only (Debian bookworm's python3 is 3.11.2: the container tests' stand-in base); it is
# pinned always, so one lock installs on every 3.11.
lock: | $(UV_STAMP)
	$(call compile,$(SERVING_LOCK),pyproject.toml,,setuptools>=69)
	$(call compile,$(FEATURES_LOCK),pyproject.toml --extra features,,setuptools>=69\nasync-timeout>=4.0.3)
	$(call compile,$(MLFLOW_LOCK),,--no-emit-package setuptools --no-emit-package pip,mlflow==$(MLFLOW_VERSION)\npsycopg2-binary>=2.9)
	$(call compile,$(DEV_LOCK),pyproject.toml --extra dev -c $(SERVING_LOCK),,pip\nsetuptools>=69)
	$(call compile,$(FEATURES_DEV_LOCK),pyproject.toml --extra dev --extra features -c $(FEATURES_LOCK),,pip\nsetuptools>=69)
	$(call compile,$(CHECKOV_LOCK),,,checkov==$(CHECKOV_VERSION))

# $(call compile,LOCK,SOURCES,OPTIONS,EXTRA REQUIREMENTS): LOCK's comments, then the pins.
define compile
	cp $(1) $(1).pins
	printf '$(4)\n' | $(UV) pip compile --quiet $(LOCK_FOR) $(UPGRADE) --no-header --no-annotate \
		$(3) $(2) - -o $(1).pins
	{ grep '^#' $(1); cat $(1).pins; } > $(1).new && rm $(1).pins && mv $(1).new $(1)
endef

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
