# Two commands: `make run` and `make test`. Both install what they need into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# One BLAS thread per process: measured several times faster on small machines.
export OMP_NUM_THREADS := 1
export OPENBLAS_NUM_THREADS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install run train test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: train on the built-in dataset unless a champion is registered
run: install
	$(BIN)/sentiment train --if-no-champion

train: install
	$(BIN)/sentiment train

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/accuracy.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
