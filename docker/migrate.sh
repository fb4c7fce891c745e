#!/bin/sh
# One-shot `migrate` service of docker-compose.yml: runs after PostgreSQL is healthy
# and must succeed before the webserver, the daemon and the code location start.
set -eu

# 1. Dagster's own database (its tables are created by Dagster on first use).
python /app/docker/ensure_dagster_db.py

# 2. The warehouse's system tables (ledger, quarantine, KPI values, catalog registry),
#    from the Alembic migrations; alembic reads alembic.ini in /app, or $ALEMBIC_CONFIG.
cd /app
exec alembic upgrade head
