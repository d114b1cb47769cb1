# The two commands: `make run` and `make test`. Each sets itself up on a fresh machine
# (Python 3.11+ and make): a virtual environment in .venv, installed from requirements.lock.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
LOCAL_PROMTOOL := .local/bin/promtool
PROMTOOL ?= $(or $(shell command -v promtool 2>/dev/null),$(LOCAL_PROMTOOL))

.PHONY: run test check lint types monitoring deploy-check install bench e2e clean lock

run: $(STAMP)
	$(BIN)/python -m devenv run

test: $(STAMP) check
	$(BIN)/python -m devenv -- $(BIN)/python -m pytest -p no:cacheprovider -m 'not e2e' $(PYTEST_ARGS)

# `make run` end to end with embedded services and a headless Chromium (installed if missing).
e2e: $(STAMP)
	command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }
	$(BIN)/python -m pytest -p no:cacheprovider -m e2e $(PYTEST_ARGS)

check: lint types monitoring deploy-check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

# The Prometheus rules (deploy/prometheus) parse, and their unit tests pass.
monitoring: $(PROMTOOL)
	$(PROMTOOL) check rules deploy/prometheus/*.yml
	$(PROMTOOL) test rules deploy/prometheus/tests/*.yml

# The systemd units (deploy/systemd) load cleanly and are sandboxed (systemd-analyze verify and
# security on a throwaway root; no running systemd needed). Installs Debian's systemd if missing.
deploy-check:
	command -v systemd-analyze >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq systemd; }
	sh deploy/systemd/verify.sh

# promtool, from Debian's prometheus package when none is on PATH: downloaded with apt-get and
# only promtool unpacked into .local/bin (installing the package would also set up and start a
# Prometheus server).
$(LOCAL_PROMTOOL):
	mkdir -p $(@D) .local/prometheus-deb
	cd .local/prometheus-deb && { apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus; }; }
	dpkg-deb --fsys-tarfile .local/prometheus-deb/prometheus_*.deb | tar -xO ./usr/bin/promtool >$@.part
	chmod 0755 $@.part && mv $@.part $@
	rm -rf .local/prometheus-deb

bench: $(STAMP)
	$(BIN)/python -m devenv -- $(BIN)/python -m bench

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve the lock files after changing dependencies in pyproject.toml (needs uv): the full
# one (runtime + dev, what `make install` uses) and the runtime-only one production installs,
# constrained to the full one's versions.
lock:
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements.lock
	uv pip compile pyproject.toml --generate-hashes --python-version 3.11 -c requirements.lock -o requirements-runtime.lock

clean:
	rm -rf $(VENV) .local .mypy_cache .ruff_cache build *.egg-info
