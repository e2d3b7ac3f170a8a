# `make test` and `make demo` build everything they need from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The older Synapse generation lives in its own virtualenv: it needs an older prometheus-client.
LEGACY_SYNAPSE := 1.142.1
LEGACY_VENV := .venv-synapse-$(LEGACY_SYNAPSE)

.PHONY: demo test lint typecheck pytest bench bench-quick clean

# The main job: a throwaway Synapse on 127.0.0.1, a bot with a dead-man's switch, SIGKILL,
# and the bot's last words arriving at a second account, timed.
demo: $(BIN)/.installed
	$(BIN)/nio-delayed demo

test: lint typecheck pytest

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,server,e2e,niobot]'
	touch $@

$(LEGACY_VENV)/bin/.installed:
	$(PYTHON) -m venv $(LEGACY_VENV)
	$(LEGACY_VENV)/bin/pip install --quiet --upgrade pip
	$(LEGACY_VENV)/bin/pip install --quiet matrix-synapse==$(LEGACY_SYNAPSE) prometheus-client==0.23.1
	touch $@

lint: $(BIN)/.installed
	$(BIN)/ruff check nio_delayed tests examples benchmarks
	$(BIN)/ruff format --check nio_delayed tests examples benchmarks

typecheck: $(BIN)/.installed
	$(BIN)/mypy

pytest: $(BIN)/.installed $(LEGACY_VENV)/bin/.installed
	NIO_DELAYED_LEGACY_SYNAPSE_PYTHON=$(abspath $(LEGACY_VENV))/bin/python $(BIN)/pytest -ra

# Benchmarks (BENCHMARKS.md): all of them, or a quick run of under two minutes.
$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@

bench: $(BIN)/.bench-installed
	$(BIN)/python -m benchmarks.run

bench-quick: $(BIN)/.bench-installed
	$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) $(LEGACY_VENV) .mypy_cache .pytest_cache .ruff_cache
