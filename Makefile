# switchyard.fs — two commands on a fresh machine:
#   make demo   swap, check and restore in a sandbox root (bootstraps .venv and the Debian tools it needs)
#   make test   every test: unit, integration (real ansible-playbook), crash/fault, molecule, sanity, fleet
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test unit integration bench deps venv clean

$(STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

deps:
	bash scripts/install-system-deps.sh

demo: venv deps
	$(BIN)/python scripts/demo.py

test: venv deps
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 --dist loadgroup $(PYTEST_ARGS) tests

unit: venv
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 tests/unit

integration: venv deps
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 --dist loadgroup tests/integration

bench: venv deps
	$(BIN)/python tests/bench/bench_scale.py
	$(BIN)/python tests/bench/bench_lock.py

clean:
	rm -rf .build .pytest_cache
