# Developer commands. `make dev` and `make test` are the two that matter on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv is the only tool we need up front; bootstrap it with pip when it is missing.
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
RUN := $(UV) run --frozen

.PHONY: help uv install dev-install dev test lint format type-check check-defs bench clean \
	migrate-upgrade migrate-downgrade migrate-create migrate-history migrate-current

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

uv:
	@command -v uv >/dev/null 2>&1 || test -x "$(UV)" || python3 -m pip install --quiet --user uv \
		|| python3 -m pip install --quiet --break-system-packages uv

# Bytecode compiled at install: every Dagster run starts a new interpreter, and where
# PYTHONDONTWRITEBYTECODE is set (many shells and images) each one compiled dagster, sqlalchemy
# and pandas again, ~1-3 s of every run's start (`uv run` itself does not compile).
SYNC := $(UV) sync --frozen --compile-bytecode

install: uv  ## install the runtime dependencies (locked)
	$(SYNC) --no-dev

dev-install: uv  ## install runtime + development dependencies (locked)
	$(SYNC)

dev: dev-install  ## local PostgreSQL + local storage + demo data + Dagster UI (Ctrl-C stops it all)
	$(RUN) analytics-pipelines dev

test: dev-install lint type-check check-defs  ## ruff, mypy, dg check defs and the test suite
	$(RUN) pytest

lint:  ## ruff lint + format check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format:  ## apply ruff formatting and safe fixes
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

type-check:  ## mypy
	$(RUN) mypy analytics_pipelines migrations bench

check-defs:  ## load the code location as Dagster would (needs no database)
	$(RUN) dg check defs

bench: dev-install  ## load / clean / KPI / ML benchmarks against psql \copy, pandas and seasonal naive (prints tables)
	$(RUN) python -m bench

migrate-upgrade:  ## apply all migrations
	$(RUN) alembic upgrade head

migrate-downgrade:  ## revert the last migration
	$(RUN) alembic downgrade -1

migrate-create:  ## new revision: make migrate-create MESSAGE="what it does"
	@test -n "$(MESSAGE)" || (echo 'usage: make migrate-create MESSAGE="what it does"' >&2; exit 2)
	$(RUN) alembic revision -m "$(MESSAGE)"

migrate-history:  ## list revisions
	$(RUN) alembic history --verbose

migrate-current:  ## revision the database is at
	$(RUN) alembic current --verbose

clean:  ## remove caches and build output (keeps .data/, the local database and storage)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
