# The two commands of the README's Quickstart: `make up` and `make test`; and `make bench`.
# Both create .venv and install the project into it on first use (and after pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv

.PHONY: up test install bench

install: $(VENV)/.installed

# With the openai-whisper extra, so that the tests cover that engine too (measured: +26 s, +2.1 GB).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test,openai-whisper]'
	touch $@

up: install
	$(VENV)/bin/ytcaption up

test: install
	$(VENV)/bin/python -m pytest

# The benchmark (README, Performance): `make bench`, or `make bench ARGS=--quick` as CI runs it.
# wrk, the HTTP load tool, is Debian's package; without it the bench uses a slower Python one.
bench: $(VENV)/.bench-installed
	command -v wrk >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq wrk >/dev/null) || echo "wrk not installed: using the Python load generator"
	$(VENV)/bin/python -m bench $(ARGS)

$(VENV)/.bench-installed: $(VENV)/.installed
	$(VENV)/bin/python -m pip install --quiet -e '.[bench]'
	touch $@
