# Every target works on a fresh clone with only Python 3.11+ and make: uv is installed into
# .tools/ when it is not on PATH, and uv builds .venv from uv.lock.
.DEFAULT_GOAL := help
SHELL := /bin/bash

UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := .tools/bin/uv
endif
RUN := $(UV) run --frozen

.PHONY: help install up test lint fmt typecheck check bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/python -m pip install --quiet uv

install: $(UV) ## build .venv from uv.lock
	$(UV) sync --frozen

up: install ## run everything in one process on http://127.0.0.1:3001
	$(RUN) runstate up

test: install ## run the test suite
	$(RUN) pytest

lint: install ## check formatting and lint
	$(RUN) ruff format --check .
	$(RUN) ruff check .

fmt: install ## format and fix what can be fixed
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

typecheck: install ## type-check src/
	$(RUN) mypy

check: lint typecheck test ## every gate: format, lint, types, tests

PRESET ?= smoke
bench: install ## benchmark: PRESET=smoke|10k|100k (realistic farm; Postgres, Redis), up-smoke|up-10k (runstate up), lab|lab-10k|lab-100k (lab farm), BENCH_ARGS="--workers 3"
	$(RUN) python -m bench --preset $(PRESET) $(BENCH_ARGS)

.PHONY: bench-history
bench-history: install ## history benchmark on PostgreSQL: bytes per check row, partition drop, history endpoints (HISTORY_ARGS="--monitors 10000")
	$(RUN) python -m bench.history $(HISTORY_ARGS)

clean: ## remove the environments and caches
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache
