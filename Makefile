# `make test` and `make demo` build everything they need from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The older Synapse generation lives in its own virtualenv: it needs an older prometheus-client.
LEGACY_SYNAPSE := 1.142.1
LEGACY_VENV := .venv-synapse-$(LEGACY_SYNAPSE)
# The real-Synapse tests mostly wait (for delays to pass, outages to end): on 2 cores, six
# workers use less than one core between them (183 tests: 7.4 minutes on four workers, 6.3 on
# six). Each worker keeps its Synapses for the session (tests/conftest.py) and takes one test
# at a time, the slowest first, so that no minute-long test starts last.
SYNAPSE_WORKERS ?= 6
# The fast lane runs on each of these that is installed (`make check-pythons`).
PYTHONS ?= 3.10 3.11 3.12 3.13

.PHONY: demo test check check-pythons lint typecheck unit synapse-tests js-peer soak package bench \
	bench-quick clean

# The main job: a throwaway Synapse on 127.0.0.1, a bot with a dead-man's switch, SIGKILL,
# and the bot's last words arriving at a second account, timed.
demo: $(BIN)/.installed
	$(BIN)/nio-delayed demo

# The fast lane first, so that a unit failure shows at once; then the packages; then Synapse.
test: check package synapse-tests

# Everything that needs no Synapse, the docs site included: about 45 s.
check: lint typecheck unit docs

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,server,e2e,niobot,metrics]'
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

# On both cores: about 40 s instead of 80.
unit: $(BIN)/.installed
	$(BIN)/pytest -q -m "not synapse" -n 2

synapse-tests: $(BIN)/.installed $(LEGACY_VENV)/bin/.installed js-peer
	NIO_DELAYED_LEGACY_SYNAPSE_PYTHON=$(abspath $(LEGACY_VENV))/bin/python \
		$(BIN)/pytest -ra -m synapse -n $(SYNAPSE_WORKERS) --dist load --maxschedchunk 1 \
		--durations=10

# matrix-js-sdk for the peer tests (test_js_interop.py, test_rtc_synapse.py), pinned by its
# lock file and installed once into tests/js/node_modules. Without npm it is left out, and those tests skip
# saying why.
JS_PEER := tests/js/node_modules/.package-lock.json
js-peer: $(JS_PEER)
$(JS_PEER): tests/js/package-lock.json
	@if command -v npm >/dev/null; then \
		echo "npm ci in tests/js (matrix-js-sdk for the interop tests)"; \
		cd tests/js && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm is not installed: the matrix-js-sdk interop tests will be skipped"; fi

# The long form of the scenarios under Synapse's default rate limits (tests/test_stock_limits.py:
# 5 minutes at 90% and at 160% of capacity, a clean close, a killed bot with 15 switches), on
# both Synapse generations: about 12 minutes. Its figures go to build/reliability.json and
# RELIABILITY.md; `make test` runs the short form of each.
soak: $(BIN)/.installed $(LEGACY_VENV)/bin/.installed
	NIO_DELAYED_SOAK=1 NIO_DELAYED_LEGACY_SYNAPSE_PYTHON=$(abspath $(LEGACY_VENV))/bin/python \
		$(BIN)/pytest -ra -m synapse -n 4 --dist load --maxschedchunk 1 tests/test_stock_limits.py

# The sdist and the wheel, as PyPI would get them: twine's checks, the contents of each
# (.ci/check_dist.py), and the unit tests run from the unpacked sdist.
package: $(BIN)/.installed
	rm -rf dist build/sdist
	$(BIN)/python -m build --quiet --outdir dist .
	$(BIN)/twine check --strict dist/*
	$(BIN)/python .ci/check_dist.py dist
	mkdir -p build/sdist
	tar -xzf dist/*.tar.gz -C build/sdist
	cd build/sdist/* && $(abspath $(BIN))/python -c \
		'import nio_delayed, os; assert nio_delayed.__file__.startswith(os.getcwd()), nio_delayed.__file__'
	cd build/sdist/* && $(abspath $(BIN))/pytest -q -p no:cacheprovider -m "not synapse" -n 2

# The fast lane on every CPython 3.10-3.13 installed (on PATH, or under pyenv without being
# selected), each in its own virtualenv with the test extra only: the tests of e2e, nio-bot and
# Synapse skip there, as they must without them.
PYENV_ROOT ?= $(HOME)/.pyenv
check-pythons:
	@for v in $(PYTHONS); do \
		py=$$(for c in python$$v $(PYENV_ROOT)/versions/$$v.*/bin/python$$v; do \
			if $$c -c '' 2>/dev/null; then echo $$c; break; fi; done); \
		if [ -z "$$py" ]; then echo "== Python $$v: not installed, skipped"; continue; fi; \
		echo "== Python $$v: $$py"; \
		$(MAKE) --no-print-directory .venv-py$$v/bin/.installed PY=$$py || exit 1; \
		.venv-py$$v/bin/mypy --cache-dir .mypy_cache/py$$v || exit 1; \
		.venv-py$$v/bin/pytest -q -p no:cacheprovider -m "not synapse" || exit 1; \
	done

.venv-py%/bin/.installed: pyproject.toml
	$(or $(PY),python$*) -m venv .venv-py$*
	.venv-py$*/bin/pip install --quiet --upgrade pip
	.venv-py$*/bin/pip install --quiet -e '.[test]'
	touch $@

# Benchmarks (BENCHMARKS.md): all of them, or a quick run of under two minutes. Only the full
# run updates the committed figures in benchmarks/results/.
$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@

bench: $(BIN)/.bench-installed
	$(BIN)/python -m benchmarks.run

bench-quick: $(BIN)/.bench-installed
	$(BIN)/python -m benchmarks.run --quick --out build/bench-quick

clean:
	rm -rf $(VENV) $(LEGACY_VENV) .venv-py3.* .mypy_cache .pytest_cache .ruff_cache .hypothesis \
		build dist tests/js/node_modules

# The documentation site (docs/, Sphinx): warnings are errors, every cross-reference and every
# link between pages (anchors included) must resolve, then the offline checks of tests/test_docs.py
# (the README's links, public names in the reference, samples). About 15 s; `make check` runs it.
.PHONY: docs
$(BIN)/.docs-installed: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[docs]'
	touch $@

docs: $(BIN)/.docs-installed
	rm -rf build/docs
	$(BIN)/sphinx-build -q -n -W --keep-going -b html docs build/docs/html
	$(BIN)/pytest -q -p no:cacheprovider tests/test_docs.py
