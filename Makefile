# Cohort developer tasks. `make help` lists them; CI runs `make test`.

VENV ?= .venv
PYTHON ?= python3

.PHONY: help run test test-rust test-python lint fmt

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: ## Build and start the server on ./cohort-data with demo data
	cargo run --bin cohort -- serve --demo

test: test-rust test-python ## Run every test suite (what CI runs)

test-rust: ## Unit, sqllogictest and Rust end-to-end tests
	cargo build --workspace --bins
	cargo nextest run --workspace --no-fail-fast

test-python: $(VENV)/.installed ## End-to-end tests through the ADBC Flight SQL driver (local store and S3 on moto)
	cargo build --bin cohort
	$(VENV)/bin/pytest -q tests/python

$(VENV)/.installed: tests/python/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r tests/python/requirements.txt
	touch $@

lint: ## rustfmt check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all
