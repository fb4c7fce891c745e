#!/bin/sh
# One-shot `migrate` service of docker-compose.yml: runs after PostgreSQL is healthy
# and must succeed before the webserver, the daemon and the code location start.
set -eu
cd /app

# 1. As the image's superuser: the pipeline's own role (not a superuser, cannot create
#    roles), owner of the warehouse and of Dagster's database (created here).
python /app/docker/prepare_database.py

# 2. As that role: the warehouse's system tables (ledger, quarantine, KPI values, catalog
#    registry), from the Alembic migrations (alembic.ini in /app, or $ALEMBIC_CONFIG).
alembic upgrade head

# 3. As the superuser again: the catalog's audiences (roles, row-level security, grants).
#    Re-run after a catalog change: `docker-compose run --rm migrate`.
exec analytics-pipelines access apply
