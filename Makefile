# inferd: `make run` serves, `make test` runs every check. Both set everything up first.
# `make check` is the fast tier: the static checks and tests/unit (no process, no service).
.PHONY: run test check setup setup-dev lint imports typecheck docs pytest unit services bench soak crash stresstest

run: setup
	.venv/bin/inferd serve

test: setup-dev lint imports typecheck docs pytest

check: .venv/bin/pytest lint imports typecheck unit

# Sets up the dev venv when it is missing (`make setup-dev` brings an existing one up to date).
.venv/bin/pytest:
	bash scripts/setup.sh dev

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh dev
	bash scripts/browser.sh
	bash scripts/promtool.sh
	bash scripts/axe.sh
	bash scripts/oidc.sh

lint:
	.venv/bin/ruff check src tests bench docs/hooks.py

# The documentation site (mkdocs.yml, docs/) into site/: strict, so a broken link, anchor or
# page fails the build; the API reference is generated from the OpenAPI document, offline.
# Its examples run against a real server in pytest (tests/docs/test_examples.py).
docs:
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict

# The import contracts in .importlinter: no cycle anywhere in src/inferd, the web framework only
# in http/, SQL only in store/, http/ never importing store/, the layers one way (src first on
# the path: the tree checked is this checkout's).
imports:
	PYTHONPATH=src .venv/bin/lint-imports

typecheck:
	.venv/bin/mypy

# The suite in two passes. First on $(WORKERS) pytest-xdist workers (2 cores: most tests wait
# on the processes they start), a test file to a worker at a time (--dist loadfile: a module's
# server starts once), the files in collection order (cluster, deploy, docs, e2e, integration,
# unit: the long ones first, the short ones fill the workers in at the end). Then the tests
# marked `serial`, alone on the machine: they stop the shared broker, or bound the growth of a
# server's memory and descriptors, which the other workers' load would move.
# The suite starts a few hundred inferd processes: with PYTHONDONTWRITEBYTECODE set (as in
# many containers) each would compile src/ again, a tenth of its start. compileall writes the
# bytecode anyway; an interpreter that may not write it still reads it.
WORKERS ?= 3
pytest:
	.venv/bin/python -m compileall -q src
	.venv/bin/python -m pytest -q -ra -n $(WORKERS) --dist loadfile --no-loadscope-reorder -m "not serial"
	.venv/bin/python -m pytest -q -ra -p no:xdist -m serial

unit:
	.venv/bin/python -m pytest -q -ra tests/unit

services:
	bash scripts/services.sh

# Reliability runs (docs/performance/reliability.md): 30 minutes of mixed load watched for
# leaks, and 50 kill -9 of inferd serve during jobs and batches on SQLite and PostgreSQL.
soak: setup-dev
	.venv/bin/python bench/soak.py --minutes 30

crash: setup-dev
	.venv/bin/python bench/crash.py --kills 50 --database sqlite
	.venv/bin/python bench/crash.py --kills 50 --database postgresql

# Load against a deployment's gateway (docs/operating/scaling-out.md): watch the autoscalers
# add pods.
#   make stresstest URL=https://inferd.example.com KEY=sk-... [CONCURRENCY=32 DURATION=300]
URL ?= http://127.0.0.1:8000
KEY ?= $(INFERD_API_KEY)
CONCURRENCY ?= 16
DURATION ?= 120
stresstest: setup
	.venv/bin/inferd bench --url $(URL) --api-key "$(KEY)" --concurrency $(CONCURRENCY) --duration $(DURATION)
