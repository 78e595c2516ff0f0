# Tasks for a fresh clone. `make install` sets everything up; `make test` runs the whole suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install serve worker test reference lint bench bench-quick

install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .

serve:
	$(BIN)/r2tuning serve

worker:
	$(BIN)/r2tuning worker

test:
	$(BIN)/python -m pytest

reference:
	$(BIN)/python -m pytest -m reference

lint:
	$(BIN)/ruff check .
	$(BIN)/mypy

bench:
	$(BIN)/r2tuning bench

bench-quick:
	$(BIN)/r2tuning bench --quick
