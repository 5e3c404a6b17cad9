# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export GOTOOLCHAIN := local

.PHONY: install test lint unit integration crds golden charts sglang-flags cluster-bins store-bins cluster-up cluster-down \
        hub-up hub-down demo demo-down bench bench-scale bench-download bench-fairness chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check ome_operator tests devtools bench
	$(BIN)/ruff format --check ome_operator tests devtools bench
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: install
	$(BIN)/pytest -m 'not integration' -q

cluster-bins:
	hack/build-cluster-bins.sh >/dev/null

# The object-store servers of the storage-scheme tests (SeaweedFS, fake-gcs-server, Azurite); the
# tests build them on first use, this only does it ahead of time.
store-bins:
	hack/build-stores.sh >/dev/null

# Everything: lint, unit, golden, schema, sglang flag checks, and the integration suites on a
# local control plane that the test session starts and stops itself.
test: install cluster-bins lint
	$(BIN)/pytest -q

integration: install cluster-bins
	$(BIN)/pytest -m integration -q

crds: install
	$(BIN)/python -m ome_operator.schema

golden: install cluster-bins
	$(BIN)/pytest tests/golden tests/charts -q --update-golden

# helm lint, rendered charts vs tests/charts/golden, dashboard metrics, values documentation.
charts: install cluster-bins
	$(BIN)/pytest tests/charts -q

sglang-flags:
	$(PY) hack/sglang_flags.py
	$(PY) hack/smg_flags.py

cluster-up: install cluster-bins
	$(BIN)/python -m devtools.cluster up

cluster-down: install
	$(BIN)/python -m devtools.cluster down

hub-up: install
	$(BIN)/python -m devtools.hub up

hub-down: install
	$(BIN)/python -m devtools.hub down

demo: install cluster-bins
	$(BIN)/python -m devtools.demo up

demo-down: install
	$(BIN)/python -m devtools.demo down

bench: install cluster-bins
	$(BIN)/python -m bench.operator

# 1,000 InferenceServices on 200 simulated nodes (about half an hour on 2 cores).
bench-scale: install cluster-bins
	$(BIN)/python -m bench.scale

bench-fairness: install cluster-bins
	$(BIN)/python -m bench.fairness

bench-download: install cluster-bins
	$(BIN)/python -m bench.download

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build dist *.egg-info

# The reliability campaign (issue 11): crash after every write, lost responses, cut watches,
# brown-outs, failover, node loss, poisoned downloads, poison pills, uninstall; one table.
# PLAN=quick samples k on every flow (see README, Reliability).
chaos: install cluster-bins
	$(BIN)/python -m devtools.chaos --plan $(or $(PLAN),full)
