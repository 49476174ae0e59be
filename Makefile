# Storefront: the two commands a new user needs are `make run` and `make test`.
# Everything else is here for developers. Tools install themselves on first use.

# uv from PATH, else the one `make` installs into .tools/bin (tools/get_uv.py).
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PY := $(UV) run --frozen python

.PHONY: help uv install install-run gen check-gen lint run up down status ps demo test test-fast bench openapi validate-deploy

help:
	@echo "make run    install what is missing, start Kafka, FerretDB, the services and Envoy,"
	@echo "            load sample data, print where to reach it; Ctrl-C stops it all"
	@echo "make test   install what is missing and run every test (unit, integration, e2e, faults)"
	@echo "make gen | check-gen | lint | up | down | status | ps | demo | bench | openapi | validate-deploy"

# Without uv: its wheel from PyPI, unpacked by the standard library (pip refuses on Debian 12,
# PEP 668).
uv:
	@command -v $(UV) >/dev/null || python3 tools/get_uv.py

# What running needs (the stack, Envoy, grpcurl for the printed hints) ...
install-run: uv
	$(UV) sync --frozen
	$(PY) -m stack install --only run

# ... and everything the tests need too (validators, ghz, Chromium, the example toolchains).
install: uv
	$(UV) sync --frozen
	$(PY) -m stack install

gen:
	$(PY) tools/protogen.py
	$(PY) tools/openapigen.py
	$(PY) istio/gen_transcoder.py

check-gen:
	$(PY) tools/protogen.py --check

lint:
	$(UV) run --frozen ruff check .
	$(UV) run --frozen mypy
	$(PY) tools/protolint.py

# `storefront run` installs the run group itself (stamped: a no-op when current) and uv run
# syncs the environment, so nothing is checked twice.
# Growth on one machine (docs/scaling.md): `make run REPLICAS=3 BROKERS=3`.
REPLICAS ?= 1
BROKERS ?= 1

run: uv
	$(UV) run --frozen storefront run --replicas $(REPLICAS) --brokers $(BROKERS)

up: install-run
	$(PY) -m stack up --brokers $(BROKERS)

down:
	$(PY) -m stack down

# One meaning of "status": the system's health, lag, outbox and DLQs (`storefront status`);
# `make ps` lists the run dir's processes.
status:
	$(UV) run --frozen storefront status

ps:
	$(PY) -m stack status

demo:
	$(UV) run --frozen storefront demo

test: install
	$(UV) run --frozen pytest -q -rs -p no:cacheprovider --durations=10

test-fast:
	$(UV) run --frozen pytest -q tests/unit

bench: install
	$(PY) -m bench

openapi:
	$(PY) tools/openapigen.py

validate-deploy:
	bash istio/validate.sh
