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

.PHONY: install test test-postgres demo up down sandbox bench clean

install: $(STAMP)

# Reinstall only when the package definition changed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

# The PostgreSQL suite (tests_postgres/, not part of `make test`): a private cluster
# (initdb into a temporary folder, a free port on 127.0.0.1, removed afterwards) holding
# the Prefect server and the state stores; two workers sync four organisations at once.
# Installs Debian's postgresql package when no initdb is found (the cluster it may
# create on install is never used).
PG_INITDB = $(firstword $(shell command -v initdb) $(wildcard /usr/lib/postgresql/*/bin/initdb))
SUDO = $(if $(filter 0,$(shell id -u)),,sudo)

test-postgres: $(STAMP)
	@if [ -z "$(PG_INITDB)" ]; then \
	  echo "no initdb found: installing Debian's postgresql package"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; \
	fi
	$(BIN)/python -m pytest tests_postgres

demo: $(STAMP)
	$(BIN)/appt-sync demo

# Start (or confirm) the local stack on 127.0.0.1: Prefect server, sandbox, webhook
# receiver and `deployments.serve` (PID files and logs in .prefect/); prints the addresses.
up: $(STAMP)
	$(BIN)/python -m deployments.stack up

# Stop exactly what `make up` / `make demo` started (process groups named by the PID
# files in .prefect/: SIGTERM, SIGKILL after 15 s), nothing else, and remove the PID
# files. Without .venv the same in shell: a PID whose start time differs from the
# file's was recycled and is left alone, and a bare-PID server.pid is Prefect's own
# (`prefect server start --background`; `prefect server stop` stops it).
down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m deployments.stack down; \
	else stopped=; for name in serve receiver sandbox server; do f="$(PREFECT_HOME)/$$name.pid"; [ -f "$$f" ] || continue; \
	  read -r pid start < "$$f"; [ -n "$$start" ] || [ $$name != server ] || continue; \
	  if [ -n "$$start" ] && [ "$$(cut -d' ' -f22 /proc/$$pid/stat 2>/dev/null)" = "$$start" ]; then kill -TERM -- -$$pid 2>/dev/null; \
	    for i in $$(seq 150); do ps -e -o pgid=,stat= | awk -v g=$$pid '$$1==g && $$2!~/^Z/{f=1} END{exit !f}' || break; sleep 0.1; done; \
	    kill -KILL -- -$$pid 2>/dev/null; fi; \
	  rm -f "$$f"; stopped="$$stopped $$name"; done; echo "stopped:$${stopped:- nothing}"; fi

sandbox: $(STAMP)
	$(BIN)/appt-sync sandbox --host 127.0.0.1 --port $(SANDBOX_PORT)

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/sandbox_bulk.py
	$(BIN)/python benchmarks/bulk_ingest.py

clean: down
	rm -rf $(VENV) .prefect .pytest_cache *.egg-info
