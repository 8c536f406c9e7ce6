# Two commands: `make run` and `make test`. Both install what they need into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run train test lint bench bench-serving clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: train on the built-in dataset unless a champion exists, then serve on port 8000
run: install
	$(BIN)/sentiment serve --train-if-missing --port 8000

train: install
	$(BIN)/sentiment train

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

## bench: model accuracy on public datasets, and compiled vs sklearn scoring cost
bench: install
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/scorer.py

## bench-serving: requests/s and p50/p99 latency of the HTTP API under wrk (installs wrk if missing)
bench-serving: install
	command -v wrk || (apt-get update && apt-get install -y wrk)
	$(BIN)/python benchmarks/serving.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
