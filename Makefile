# TripLink connector — every developer and CI entry point.
#   make test   formatting, lints and every test (installs what it needs itself)
#   make demo   the main job end to end on the local stack
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
VENV_STAMP := $(VENV)/.installed-$(shell cat requirements-dev.txt | cksum | cut -d' ' -f1)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export CARGO_TERM_COLOR ?= never

.PHONY: bench help test test-tmpdir fmt-check clippy cargo-test e2e demo venv conformance template-lint build template-checkov

help:
	@echo "make test   - fmt check, clippy -D warnings, every test"
	@echo "make conformance - Schemathesis: the Concur sandbox against the v3.2 Swagger"
	@echo "make e2e    - the release functions under a local Lambda: verdict per scenario"
	@echo "make demo   - run the connector end to end on one machine"
	@echo "make build  - sam build: both functions for Lambda (arm64) in .aws-sam/build"
	@echo "make bench  - make build, then the performance figures into bench/results.md"

# A project virtualenv with the pinned Python tools of requirements-dev.txt.
$(VENV_STAMP): requirements-dev.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV_STAMP)

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

cargo-test: venv test-tmpdir
	cargo test --workspace --locked

# The Concur sandbox against the official v3.2 Swagger (corrected where it
# contradicts the reference page): sandbox/conformance/run.sh, sandbox/README.md.
conformance: venv
	VENV=$(VENV) sandbox/conformance/run.sh

# The SAM template: SAM's validation with its linter, then cfn-lint. Offline, no AWS account.
SAM_ENV := SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1}
template-lint: venv
	$(SAM_ENV) sam validate --lint --template-file template.yaml
	cfn-lint template.yaml

# Both functions for Lambda: sam build runs cargo-lambda (arm64 through zig, both from .venv).
# Own cargo target directory: the release cross-build does not wait on the tests' target/ lock.
LAMBDA_TARGET_DIR ?= $(CURDIR)/target-lambda
build: venv
	$(SAM_ENV) CARGO_TARGET_DIR=$(LAMBDA_TARGET_DIR) sam build --template-file template.yaml
	file .aws-sam/build/*/bootstrap

# Security scan of the template (part of `make test`; offline with --skip-download); each skipped
# check is justified in the template beside its resource (Metadata.checkov.skip).
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(shell cat deploy/requirements-checkov.txt | cksum | cut -d' ' -f1)
$(CHECKOV_STAMP): deploy/requirements-checkov.txt
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r deploy/requirements-checkov.txt
	touch $@
template-checkov: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/checkov --skip-download --quiet --compact --framework cloudformation -f template.yaml

# The Lambda-level end-to-end test (demo/tests/lambda_e2e.rs): the release bootstraps of
# both functions run as Lambda runs them (Runtime API, cold starts, deadlines, crashes,
# timeouts), the poller on its schedule and the worker behind the stream mapping read
# from template.yaml, against moto and the Concur sandbox. One verdict line per scenario.
e2e: venv test-tmpdir
	cargo test --workspace --locked --test lambda_e2e -- --ignored --nocapture --test-threads=1

# The project's tests (cargo-test, e2e) get a temp dir of their own (TMPDIR), which must be
# empty at the end of `make test`: they clean up after themselves, even the ones that kill
# processes mid-step. (The Python tools keep the system's: their caches are theirs.)
TEST_TMPDIR := $(CURDIR)/target/test-tmp
cargo-test e2e: export TMPDIR := $(TEST_TMPDIR)
test: fmt-check clippy cargo-test conformance template-lint template-checkov e2e
	@left="$$(ls -A $(TEST_TMPDIR))"; if [ -n "$$left" ]; then \
		echo "tests left files in the temp dir $(TEST_TMPDIR):"; echo "$$left"; exit 1; fi
	@echo "temp dir clean: the tests left nothing behind"

test-tmpdir:
	rm -rf $(TEST_TMPDIR) && mkdir -p $(TEST_TMPDIR)

# Benchmarks that print figures (loopback only). `make build` first: the results include
# the arm64 bootstraps and zips of .aws-sam/build. demo/benches/lambda.rs builds the release
# functions and a bare lambda_runtime echo, prints one table and rewrites bench/results.md
# and bench/results.json; then the poller's overlap of writes and fetches; then the matching
# engine's throughput (criterion, printed only; bench/README.md keeps one run's figures).
bench: venv build
	cargo bench --locked -p demo --bench lambda
	cargo bench --locked -p poller --bench overlap
	cargo bench --locked -p triplink-shared --bench matching

# The main job end to end on this machine: moto_server (from .venv) and the Concur
# sandbox on free loopback ports, poller and worker until Concur's queue is drained.
demo: venv
	cargo run --locked --quiet -p demo --bin triplink-demo -- $(DEMO_ARGS)
