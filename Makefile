# Two commands do all the set-up (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench

# One install for both import packages (queuerun and queuerun_gcp) plus the dev tools, on the Pulumi
# SDK versions pyproject.toml declares as floors (requirements/floors.txt).
$(VENV)/.installed: pyproject.toml runtime/pyproject.toml requirements/floors.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]" -c requirements/floors.txt
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python examples/quickstart/app.py

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/embedded_throughput.py
