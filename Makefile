# zoho-appointment-sync: every target bootstraps .venv itself on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SANDBOX_PORT ?= 8900

# Keep Prefect quiet, offline and inside the project for everything make runs.
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: install test demo down sandbox bench clean

install: $(STAMP)

# Reinstall only when the package definition changed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/appt-sync demo

# Stop the Prefect server `make demo` started (PID file), nothing else.
down:
	@if [ -f .prefect/server.pid ]; then kill -TERM -- -$$(cat .prefect/server.pid) 2>/dev/null || true; rm -f .prefect/server.pid; echo "stopped the Prefect server"; else echo "nothing to stop"; fi

sandbox: $(STAMP)
	$(BIN)/appt-sync sandbox --host 127.0.0.1 --port $(SANDBOX_PORT)

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/sandbox_bulk.py
	$(BIN)/python benchmarks/bulk_ingest.py

clean:
	rm -rf $(VENV) .prefect .pytest_cache *.egg-info
