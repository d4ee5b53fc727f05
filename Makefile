# otelbot — the README's commands. `make test` and `make demo` work on a fresh machine:
# they create .venv, install the project, and make sure PostgreSQL and Redis run; `make test`
# also installs the deployment checks' tools (helm, promtool, prometheus). Under CI (CI=true)
# a tool or server that can't be had fails the run instead of skipping tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LINT_PATHS := otelbot tests examples bench dashboards

.PHONY: test demo lint bench docs services tools clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

services:
	scripts/services

tools: $(VENV)/.installed
	OTELBOT_PYTHON=$(BIN)/python scripts/install-tools

# -rfEs: the summary lists failures, errors and every skip with its reason.
test: $(VENV)/.installed services tools
	source .services/env && $(BIN)/pytest -q -rfEs $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

docs: $(VENV)/.installed
	$(BIN)/python -m otelbot.semconv > docs/metrics.md
	$(BIN)/python -m otelbot.semconv findings > docs/findings.md

demo: $(VENV)/.installed services
	source .services/env && $(BIN)/otelbot demo

$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

bench: $(VENV)/.bench-installed services
	scripts/install-tools --bench
	source .services/env && $(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .services .pytest_cache .mypy_cache .ruff_cache
