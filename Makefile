# The two commands of the README's Quickstart: `make up` and `make test`; and `make bench`, `make docs`.
# Each creates .venv and installs into it on first use (and again after pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv

.PHONY: up test install install-test bench docs storm

# What serving needs: the API, the worker (faster-whisper) and the scheduler.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e .
	touch $@

# The tests also cover the optional openai-whisper engine (measured: +26 s, +2.1 GB).
install-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed
	$(VENV)/bin/python -m pip install --quiet -e '.[test,openai-whisper]'
	touch $@

up: install
	$(VENV)/bin/ytcaption up

test: install-test
	$(VENV)/bin/python -m pytest

# Regenerate the tables in docs/ from the code and the last benchmark (a test fails when they are stale).
docs: install-test
	$(VENV)/bin/cog -r -I docs -I . docs/*.md

# The benchmark (docs/performance.md): `make bench`, or `make bench ARGS=--quick` as CI runs it.
# wrk, the HTTP load tool, is Debian's package; without it the bench uses a slower Python one.
bench: $(VENV)/.installed-bench
	command -v wrk >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq wrk >/dev/null) || echo "wrk not installed: using the Python load generator"
	$(VENV)/bin/python -m bench $(ARGS)

$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(VENV)/bin/python -m pip install --quiet -e '.[bench]'
	touch $@

# The kill storm with 300 jobs (bench/storm.py; the suite runs it with 60): prints the figures.
storm: install-test
	$(VENV)/bin/python -m bench.storm --jobs 300 $(ARGS)
