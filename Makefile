# The two commands: `make run` and `make test`. Each sets itself up on a fresh machine
# (Python 3.11+ and make): a virtual environment in .venv, installed from requirements.lock.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test check lint types install bench e2e clean lock

run: $(STAMP)
	$(BIN)/python -m devenv run

test: $(STAMP) check
	$(BIN)/python -m devenv -- $(BIN)/python -m pytest -p no:cacheprovider -m 'not e2e' $(PYTEST_ARGS)

# `make run` end to end with embedded services and a headless Chromium (installed if missing).
e2e: $(STAMP)
	command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }
	$(BIN)/python -m pytest -p no:cacheprovider -m e2e $(PYTEST_ARGS)

check: lint types

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m devenv -- $(BIN)/python -m bench

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve the lock file after changing dependencies in pyproject.toml (needs uv).
lock:
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .local .mypy_cache .ruff_cache build *.egg-info
