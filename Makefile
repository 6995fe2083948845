# Member Vault — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VAULT_DATA_DIR ?= ./var
export VAULT_DATA_DIR

.PHONY: run test lint check bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)" >&2; exit 1; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

## run: set up the data directory (keyring, migrations, demo data once) and serve the API on 127.0.0.1:8000
run: $(STAMP)
	$(BIN)/vaultctl init
	$(BIN)/vaultctl demo seed --members 200 --seed 1 --if-empty
	$(BIN)/vaultctl demo tokens
	$(BIN)/vaultctl serve --host 127.0.0.1 --port 8000 --workers 2

## test: install PostgreSQL and SoftHSM2 if missing, start throwaway instances, run the whole suite
test: $(STAMP)
	VAULT_TEST_REQUIRE_SERVICES=1 bash scripts/with-test-services.sh $(BIN)/pytest -n auto

## lint: formatting, lint rules, strict typing, import contracts
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

## bench: the benchmarks of docs/benchmarks.md, each against its plain baseline in the same run
bench: $(STAMP)
	@command -v wrk >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null; }
	bash scripts/with-test-services.sh $(BIN)/python -m tests.benchmarks
	bash scripts/with-test-services.sh $(BIN)/python -m tests.benchmarks.http
	bash scripts/with-test-services.sh $(BIN)/python -m tests.benchmarks.audit
	$(BIN)/python -m tests.benchmarks.requests
	$(BIN)/python -m tests.benchmarks.extracts

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
