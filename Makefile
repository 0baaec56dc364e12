# The two set-up commands of the README:
#   make run   - install and run rportd on its embedded defaults (localhost only)
#   make test  - install what the tests need, then lint, type-check and test
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run test lint typecheck unit install system-packages clean bench

$(BIN)/rportd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/rportd

install: $(BIN)/rportd

run: install
	$(BIN)/rportd

lint: install
	$(BIN)/ruff check rportd tests bench
	$(BIN)/ruff format --check rportd tests bench

typecheck: install
	$(BIN)/mypy

# Real servers the tests start (etcd, MariaDB, PostgreSQL, Chromium, promtool).
system-packages:
	sh tests/setup/system-packages.sh

unit: install system-packages
	$(BIN)/pytest -q

test: lint typecheck unit

# Upstream's server beside rportd (never part of `make test`):
#   make bench BENCH_ARGS="--server-binary /path/to/upstream/rportd --rport /path/to/rport"
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
