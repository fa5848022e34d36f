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

.PHONY: install test demo sandbox bench clean

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

sandbox: $(STAMP)
	$(BIN)/appt-sync sandbox --host 127.0.0.1 --port $(SANDBOX_PORT)

bench: $(STAMP)
	$(BIN)/python benchmarks/sandbox_bulk.py

clean:
	rm -rf $(VENV) .prefect .pytest_cache *.egg-info
