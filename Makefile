# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
BIND_ADDRESS ?= 127.0.0.1:8443

.PHONY: run test install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

## Start the server (embedded PostgreSQL when DATABASE_URL is unset) with a demo tenant and admin token.
run: $(STAMP)
	BIND_ADDRESS=$(BIND_ADDRESS) $(BIN)/scaivault serve --demo

## Run the test suite (SCAIVAULT_TEST_DATABASE_URL, else an embedded PostgreSQL).
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

## Benchmarks (not tests): writes figures to bench/results/ and prints a summary.
bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
