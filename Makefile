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

.PHONY: help test fmt-check clippy cargo-test demo venv conformance

help:
	@echo "make test   - fmt check, clippy -D warnings, every test"
	@echo "make conformance - Schemathesis: the Concur sandbox against the v3.2 Swagger"
	@echo "make demo   - run the connector end to end on one machine"

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

cargo-test: venv
	cargo test --workspace --locked

# The Concur sandbox against the official v3.2 Swagger (corrected where it
# contradicts the reference page): sandbox/conformance/run.sh, sandbox/README.md.
conformance: venv
	VENV=$(VENV) sandbox/conformance/run.sh

test: fmt-check clippy cargo-test conformance

demo:
	@echo "make demo: the end-to-end run arrives with the poller and worker (issues 4-6)."
	@echo "It will start moto_server and the Concur sandbox on loopback, seed both, run the"
	@echo "poller and deliver the stream to the worker until Concur's queue is drained."
