# The two commands: `make run` (a working node on the embedded default) and
# `make test` (everything, with Redis, ZooKeeper and Cassandra started for real).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

export CHAT_PORT ?= 8000

.PHONY: run test lint test-unit test-fast services services-down services-status cluster cluster-down bench test-tools image clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

## Start a node on :8000 with nothing configured (SQLite + in-process relay).
run: $(STAMP)
	$(BIN)/chat serve

## Set up everything and run the whole suite with every service started.
test: $(STAMP) test-tools
	PYTHON=$(abspath $(BIN)/python) scripts/test.sh

## ruff and mypy (strict on the pure core), as `make test` runs them.
lint: $(STAMP)
	$(BIN)/ruff check chat presence discovery tests bench
	$(BIN)/mypy

## Unit and contract (embedded adapters) only: no services, seconds.
test-fast: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/contract -m "not cassandra and not redis and not zookeeper"

test-tools:
	@scripts/ensure-test-tools.sh

services: $(STAMP)
	PYTHON=$(abspath $(BIN)/python) scripts/services.sh up

services-down:
	scripts/services.sh down

services-status:
	scripts/services.sh status

## Three chat nodes on 8001-8003 sharing Cassandra and Redis (starts the services too).
cluster: $(STAMP)
	PYTHON=$(abspath $(BIN)/python) scripts/cluster.sh up

cluster-down:
	scripts/cluster.sh down

## Every figure of BENCHMARKS.md (starts Redis and Cassandra when they are not up); BENCH_ARGS=--quick: a smoke run.
bench: $(STAMP)
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

## The container image (Dockerfile) with podman, buildah or docker, whichever builds here;
## IMAGE=registry/chat-server:TAG to name it, PUSH=1 to push it too.
IMAGE ?= chat-server:dev
image:
	PUSH=$(PUSH) scripts/image.sh $(IMAGE)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .chat-data
