# inferd: `make run` serves, `make test` runs every check. Both set everything up first.
.PHONY: run test setup setup-dev lint typecheck pytest services bench

run: setup
	.venv/bin/inferd serve

test: setup-dev lint typecheck pytest

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh dev
	bash scripts/browser.sh

lint:
	.venv/bin/ruff check src tests bench

typecheck:
	.venv/bin/mypy

pytest:
	.venv/bin/python -m pytest -q -ra

services:
	bash scripts/services.sh
