# Cohort developer tasks. `make help` lists them; CI runs `make test`.

VENV ?= .venv
# Apache Superset pins its own dependency set (SQLAlchemy 1.4, marshmallow 3): a venv of its own.
BI_VENV ?= .venv-bi
PYTHON ?= python3

.PHONY: help run test test-rust test-python test-bi fuzz lint fmt

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: ## Build and start the server on ./cohort-data with demo data
	cargo run --bin cohort -- serve --demo

test: test-rust test-python test-bi fuzz ## Run every test suite (what CI runs)

test-rust: ## Unit, sqllogictest and Rust end-to-end tests
	cargo build --workspace --bins
	cargo nextest run --workspace --no-fail-fast

test-python: $(VENV)/.installed ## End-to-end tests through the ADBC Flight SQL driver (local store and S3 on moto)
	cargo build --bin cohort
	$(VENV)/bin/pytest -q tests/python

test-bi: $(BI_VENV)/.installed ## Apache Superset end to end on the PostgreSQL endpoint (needs /usr/bin/chromium)
	cargo build --bin cohort
	$(BI_VENV)/bin/pytest -q tests/bi

# Each target runs this long; `make fuzz FUZZ_SECONDS=600` for a real session. cargo-fuzz wants
# nightly for its flags; RUSTC_BOOTSTRAP lets the one stable toolchain accept them, and with
# `--sanitizer none` nothing else needs nightly.
FUZZ_SECONDS ?= 15
FUZZ_TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/fuzz

fuzz: ## Run every cargo-fuzz target (fuzz/) for FUZZ_SECONDS each; fails if it finds none
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && targets="$$(cargo fuzz list)" && \
	if [ -z "$$targets" ]; then echo "make fuzz: cargo fuzz list found no targets in fuzz/" >&2; exit 1; fi && \
	for target in $$targets; do \
	  mkdir -p corpus/$$target && \
	  RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) cargo fuzz run --dev --sanitizer none $$target corpus/$$target \
	    -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -rss_limit_mb=4096 || exit 1; \
	done

$(VENV)/.installed: tests/python/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r tests/python/requirements.txt
	touch $@

$(BI_VENV)/.installed: tests/bi/requirements.txt
	$(PYTHON) -m venv $(BI_VENV)
	$(BI_VENV)/bin/pip install --quiet --upgrade pip
	$(BI_VENV)/bin/pip install --quiet -r tests/bi/requirements.txt
	touch $@

lint: ## rustfmt check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all
