# Every target that needs Python creates .venv first, so a fresh machine needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 3
export TF_ENABLE_ONEDNN_OPTS ?= 0

.PHONY: venv test lint fuzz demo bench soak binder-check clean

venv: $(STAMP)

# Re-install when the venv is missing, or pyproject.toml is newer than the last install (stale).
$(STAMP): pyproject.toml setup.py tfserve_magic/server/_simdnest.cpp
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

lint: venv
	$(BIN)/ruff check .

test: venv lint
	$(BIN)/python -m pytest -q tests

# Long fuzz run of the REST API (tests/test_fuzz.py); FUZZ_CASES / FUZZ_SEED to change it.
FUZZ_CASES ?= 100000
FUZZ_SEED ?= $(shell date +%s)
fuzz: venv
	TFSERVE_FUZZ_CASES=$(FUZZ_CASES) TFSERVE_FUZZ_SEED=$(FUZZ_SEED) $(BIN)/python -m pytest -q tests/test_fuzz.py

demo: venv
	$(BIN)/python -m tfserve_magic.demo

# Options: make bench BENCH_ARGS=--quick (see python -m bench.run --help). wrk is used if installed.
bench: venv
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Mixed load on a 2-worker server with hot swaps and worker kills (bench/soak.py); prints
# requests, failures, memory and open files per interval. SOAK_MINUTES (default 5).
SOAK_MINUTES ?= 5
soak: venv
	SOAK_MINUTES=$(SOAK_MINUTES) $(BIN)/python -m bench.soak $(SOAK_ARGS)

# Slow (1-3 min): installs binder/requirements.txt into a fresh venv and runs the quickstart there.
binder-check:
	bash binder/check.sh

clean:
	rm -rf $(VENV) build .pytest_cache
