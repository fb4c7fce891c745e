"""Create Dagster's own PostgreSQL database if it does not exist yet (idempotent).

Run by the one-shot `migrate` service of docker-compose.yml before `alembic upgrade head`.
Dagster's storage gets a database of its own (DAGSTER_PG_DB) because Dagster and our
Alembic migrations both keep an `alembic_version` table. The postgres image creates only
POSTGRES_DB on first start, and only on an empty volume; doing it here also covers an
existing volume. Dagster creates its tables itself on first connection.
"""

from __future__ import annotations

import os
import sys
import time

import psycopg2
from psycopg2 import sql


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        sys.exit(f"ensure_dagster_db: {name} is not set")
    return value


def _connect(params: dict[str, object], attempts: int = 30) -> psycopg2.extensions.connection:
    """Connect, retrying while the server finishes starting up."""
    for attempt in range(1, attempts + 1):
        try:
            return psycopg2.connect(**params)
        except psycopg2.OperationalError as exc:
            if attempt == attempts:
                sys.exit(f"ensure_dagster_db: cannot connect to PostgreSQL: {exc}")
            time.sleep(2)
    raise AssertionError("unreachable")


def main() -> None:
    db_name = _env("DAGSTER_PG_DB")
    params: dict[str, object] = {
        "host": _env("DAGSTER_PG_HOST"),
        "port": int(_env("DAGSTER_PG_PORT", "5432")),
        "user": _env("DAGSTER_PG_USER"),
        "password": os.environ.get("DAGSTER_PG_PASSWORD", ""),
        # Any database that exists on a fresh server, to issue CREATE DATABASE from.
        "dbname": os.environ.get("DAGSTER_PG_MAINTENANCE_DB", "postgres"),
        "connect_timeout": 5,
    }
    conn = _connect(params)
    conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db_name,))
            if cur.fetchone():
                print(f"ensure_dagster_db: database {db_name!r} exists")
                return
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
            print(f"ensure_dagster_db: created database {db_name!r}")
    finally:
        conn.close()


if __name__ == "__main__":
    main()
