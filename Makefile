# The two commands of the README's Quickstart: `make up` and `make test`.
# Both create .venv and install the project into it on first use (and after pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv

.PHONY: up test install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $@

up: install
	$(VENV)/bin/ytcaption up

test: install
	$(VENV)/bin/python -m pytest
