# Weft: `make up` runs the platform on the embedded default; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: up test test-soak bench clean-data

$(BIN)/weft: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Weft needs Python 3.11+, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

up: $(BIN)/weft
	$(BIN)/weft up

# -rs: skipped tests with their reasons in the summary (the browser tests say "BROWSER TESTS SKIPPED" there)
test: $(BIN)/weft
	$(BIN)/python -m pytest -rs

test-soak: $(BIN)/weft
	$(BIN)/python -m pytest -m soak

bench: $(BIN)/weft
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'  # the DBOS peer bench_runs.py compares against
	$(BIN)/python bench/bench_append.py
	$(BIN)/python bench/bench_planner.py
	$(BIN)/python bench/bench_runs.py
	$(BIN)/python bench/bench_scheduler.py
	$(BIN)/python bench/bench_public_api.py
	$(BIN)/python bench/bench_webhooks.py
	$(BIN)/python bench/bench_telemetry.py
	$(BIN)/python bench/bench_history.py
	$(BIN)/python bench/bench_growth.py

clean-data:
	rm -rf .weft
