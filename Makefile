# Two commands do all the set-up (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench

# One install for both import packages (queuerun and queuerun_gcp) plus the dev tools, on the Pulumi
# SDK versions pyproject.toml declares as floors (requirements/floors.txt).
$(VENV)/.installed: pyproject.toml runtime/pyproject.toml requirements/floors.txt
	@echo "==> creating $(VENV) and installing queuerun, queuerun_gcp and the dev tools (first time: a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e ".[dev]" -c requirements/floors.txt \
		| grep --line-buffered -E "^(Collecting|Successfully installed)" || true
	$(BIN)/python -c "import queuerun, queuerun_gcp"  # the install above is filtered: check it worked
	@echo "==> installed; the queuerun command is $(BIN)/queuerun"
	touch $@

install: $(VENV)/.installed

demo: install
	@echo "==> running examples/quickstart/app.py on the embedded backend (no cloud account needed)"
	@$(BIN)/python examples/quickstart/app.py

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/embedded_throughput.py
