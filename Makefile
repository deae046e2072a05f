# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo up test lint bench system-deps bench-deps

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed

# Debian packages the tests use: mosquitto clients (mosquitto_pub/sub) drive the broker in tests.
system-deps:
	@command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q mosquitto-clients)

# The benchmark compares against a real mosquitto broker.
bench-deps: system-deps
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q mosquitto)

demo: $(VENV)/.installed
	$(BIN)/bayou up --demo

up: $(VENV)/.installed
	$(BIN)/bayou up

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(VENV)/.installed-test system-deps lint
	$(BIN)/pytest

bench: $(VENV)/.installed-bench bench-deps
	$(BIN)/python -m benchmarks.run
