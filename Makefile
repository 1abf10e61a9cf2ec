# switchyard.fs — two commands on a fresh machine:
#   make demo   swap, check and restore in a sandbox root (a light venv: ansible-core, jsonschema; apt: rust-coreutils)
#   make test   every test: unit, integration (real ansible-playbook), ansible-test units/integration (ansible-core
#               2.19 and 2.16), crash/fault, molecule, sanity, lint, changelog, docs, EE/AWX, fleet
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_VENV := .build/venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed
VERSION = $(shell sed -n 's/^version: *//p' galaxy.yml)
PYTEST_ARGS ?=

.PHONY: demo demo-deps test unit integration ansible-test bench deps venv changelog clean

# The development toolchain (make test).
$(STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

deps:
	bash scripts/install-system-deps.sh

# The demo's own light venv: only what scripts/demo.py uses.
$(DEMO_STAMP): requirements-demo.txt
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-demo.txt
	touch $(DEMO_STAMP)

demo-deps:
	bash scripts/install-system-deps.sh demo

demo: $(DEMO_STAMP) demo-deps
	$(DEMO_VENV)/bin/python scripts/demo.py

test: venv deps
	$(BIN)/antsibull-changelog lint
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 --dist loadgroup --durations=30 -rfE $(PYTEST_ARGS) tests

unit: venv
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 tests/unit

integration: venv deps
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 --dist loadgroup tests/integration

# ansible-test units and integration targets alone (make test runs them too).
ansible-test: venv deps
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 --dist loadgroup tests/ansible_test

bench: venv deps
	$(BIN)/python tests/bench/bench_scale.py
	$(BIN)/python tests/bench/bench_lock.py
	$(BIN)/python tests/bench/bench_journals.py

# Fold changelogs/fragments/*.yml into the release of galaxy.yml's version and regenerate CHANGELOG.md.
changelog: venv
	PATH=$(CURDIR)/$(BIN):$$PATH ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/.build/collections $(BIN)/python -c \
	  "import runpy; runpy.run_path('tests/conftest.py')"
	PATH=$(CURDIR)/$(BIN):$$PATH ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/.build/collections \
	  $(BIN)/antsibull-changelog release --version $(VERSION) --update-existing

clean:
	rm -rf .build .pytest_cache
