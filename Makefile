# The two commands a newcomer needs: `make run` (the demo) and `make test` (everything, real servers).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVICES := deploy/local/services.sh
# KAFKA_PORT, REDIS_PORT, KAFKA_BROKERS=3, SECURE=1, REDIS_HA=1 reach services.sh from the environment;
# each shape has its own default ports (deploy/local/services.sh help).

.PHONY: help venv compile pure services-up services-down test unit integration lint format run bench bench-cluster chaos clean

help:
	@echo "make run            demo: local Kafka + Redis, the consumer, sample leads, results"
	@echo "make test           unit + integration tests against real Kafka and Redis"
	@echo "                   (SECURE=1: on the secured services, plus the least-privilege tests)"
	@echo "make lint           ruff + mypy --strict"
	@echo "make compile        rebuild the compiled per-event modules (mypyc; make test does it too)"
	@echo "make pure           remove them: run the same code interpreted"
	@echo "make services-up    start local Kafka (KRaft) on 127.0.0.1:9092 and Redis on :6379"
	@echo "                   (KAFKA_BROKERS=3: a three-node cluster; SECURE=1: SASL_SSL + TLS; REDIS_HA=1: Sentinel)"
	@echo "make services-down  stop them"
	@echo "make bench          throughput, latency and memory benchmark (figures in docs/performance.md)"
	@echo "make bench-cluster  the same on a three-broker cluster, topics at replication factor 3"
	@echo "make chaos          fault suite: kill -9, Redis and broker faults, rebalances, a broker cluster"

# Extensions of modules no longer listed in setup.py would still be imported: every build starts
# from none.
REMOVE_EXTENSIONS := find consumer -name '*.so' -delete; rm -f *__mypyc.*.so

$(BIN)/leadattr: pyproject.toml setup.py
	@command -v $(PYTHON) >/dev/null || { echo "python3 is missing"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(REMOVE_EXTENSIONS)
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@ .compiled

# The per-event modules run compiled (mypyc, setup.py). The extensions sit next to their sources
# and Python imports them first, so they are rebuilt whenever a source changed (consumer/__init__.py
# refuses to import a stale one). `make pure` removes them: the same code runs interpreted.
.compiled: $(BIN)/leadattr $(shell find consumer -name '*.py') setup.py
	$(REMOVE_EXTENSIONS)
	$(BIN)/python setup.py -q build_ext --inplace
	@# The per-module .so files are shims that setuptools leaves untouched when their C did not
	@# change (the code is in the shared *__mypyc.*.so): mark them as built from these sources.
	@find consumer -name '*.so' -exec touch {} +
	@touch $@

venv: $(BIN)/leadattr .compiled

compile: venv

pure:
	rm -f .compiled
	$(REMOVE_EXTENSIONS)

services-up:
	bash $(SERVICES) up

services-down:
	bash $(SERVICES) down

# SECURE=1: the same suite on the secured services (SASL_SSL, TLS, ACLs; started here first, their
# credentials are read from .services/secure*.env), plus tests/secured.
test: venv
	@if [ "$${SECURE:-0}" = 1 ]; then bash $(SERVICES) up; fi
	$(BIN)/pytest -q -rs tests

unit: venv
	$(BIN)/pytest -q tests/unit

integration: venv
	$(BIN)/pytest -q -rs tests/integration

lint: venv
	$(BIN)/ruff check consumer harness tests bench deploy/local setup.py
	$(BIN)/ruff format --check consumer harness tests bench deploy/local setup.py
	$(BIN)/mypy

format: venv
	$(BIN)/ruff check --fix consumer harness tests bench deploy/local setup.py
	$(BIN)/ruff format consumer harness tests bench deploy/local setup.py

run: venv
	$(BIN)/python deploy/local/demo.py

bench: venv
	$(BIN)/python -m bench

bench-cluster: venv
	$(BIN)/python -m bench --brokers 3

chaos: venv
	$(BIN)/python -m tests.chaos

clean:
	bash $(SERVICES) clean
