# moltbot — the targets the README and CI use.
SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
export CARGO_TERM_COLOR ?= auto

.PHONY: run build release test test-rust test-e2e lint fmt docs deps-python clean

## run: build and start moltbot with the embedded defaults (reads .env / MODEL_ENDPOINT / API_KEY)
run:
	$(CARGO) run -p moltbot -- serve

build:
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --release -p moltbot

## test: every test suite (Rust unit/integration/conformance, then the OpenAI SDK end-to-end tests)
test: test-rust test-e2e

test-rust:
	$(CARGO) nextest run --workspace --all-targets --no-fail-fast

$(VENV)/.ok: tests/e2e/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
	touch $@

deps-python: $(VENV)/.ok

test-e2e: deps-python
	$(CARGO) build -p moltbot -p moltbot-testkit --bins
	MOLTBOT_BIN=$(CURDIR)/target/debug/moltbot $(VENV)/bin/python -m pytest -q tests/e2e

## lint: formatting and clippy, warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## docs: regenerate docs/config.md and docs/openapi.json from the code
docs:
	MOLTBOT_TEST_REGENERATE_DOCS=1 $(CARGO) test -p moltbot-config docs
	MOLTBOT_TEST_REGENERATE_DOCS=1 $(CARGO) test -p moltbot-server --test openapi

clean:
	$(CARGO) clean
	rm -rf $(VENV)
