"""Prepare the Docker stack's PostgreSQL for a pipeline that is not a superuser (idempotent).

Run by the one-shot `migrate` service of docker-compose.yml, before `alembic upgrade head`,
as the image's superuser (POSTGRES_USER, reached through ACCESS_ADMIN_DATABASE_URL): the
runtime role `analytics_pipelines` (login with PIPELINES_DB_PASSWORD; no superuser, no
CREATEROLE, no CREATEDB) is created or updated, made the owner of the warehouse
(POSTGRES_DB) and of Dagster's own database (DAGSTER_PG_DB, created here: Dagster and our
migrations both keep an `alembic_version` table), and of what a volume from an earlier
version holds. Every other service connects as that role; only `migrate` holds the admin URL.
"""

from __future__ import annotations

import os
import sys
import time

import psycopg2

from analytics_pipelines.lib.access.runtime_role import RUNTIME_ROLE, prepare_runtime_role
from analytics_pipelines.lib.pg import libpq_url


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"prepare_database: {name} is not set")
    return value


def _wait_for_server(admin_url: str, attempts: int = 30) -> None:
    """The server may still be finishing its start-up although its health check passed."""
    for attempt in range(1, attempts + 1):
        try:
            psycopg2.connect(libpq_url(admin_url), connect_timeout=5).close()
            return
        except psycopg2.OperationalError as exc:
            if attempt == attempts:
                sys.exit(f"prepare_database: cannot connect to PostgreSQL as the admin: {exc}")
            time.sleep(2)


def main() -> None:
    admin_url = _env("ACCESS_ADMIN_DATABASE_URL")
    database = _env("POSTGRES_DB")
    dagster_database = _env("DAGSTER_PG_DB")
    password = _env("PIPELINES_DB_PASSWORD")
    _wait_for_server(admin_url)
    prepare_runtime_role(admin_url, database, dagster_database, password)
    sys.stdout.write(
        f"prepare_database: role {RUNTIME_ROLE} owns {database!r} and {dagster_database!r}\n"
    )


if __name__ == "__main__":
    main()
