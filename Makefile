# The two commands a user needs: `make run` and `make test`. Both create or refresh .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run test bench lock clean

setup: $(STAMP)

# Re-installs only when pyproject.toml or the lock changes; a fast no-op otherwise.
$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c requirements.lock -e '.[test]'
	touch $@

run: setup
	dvc repro
	@echo
	@cat reports/report.md

test: setup
	python -m pytest

bench: setup
	python -m benchmarks

# Re-pin every dependency after editing pyproject.toml.
lock: setup
	$(VENV)/bin/python -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV)
