"""Least privilege in `make dev`: the pipelines run as a password-protected role that is neither
a superuser nor allowed to create roles; role management goes through the server's socket.

The scenario starts from a data folder made the old way (trusted logins, everything owned by the
superuser), then runs the real `analytics-pipelines dev --no-ui` on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from alembic import command

from analytics_pipelines.lib.pg import libpq_url
from analytics_pipelines.lib.pgserver import LocalPostgres, PostgresUnavailable, free_port
from analytics_pipelines.lib.settings import normalise_database_url
from analytics_pipelines_tests.conftest import PROJECT_ROOT, alembic_config, world_readable_tempdir
from analytics_pipelines_tests.test_access import cli

VENV_BIN = Path(sys.executable).parent


def tcp(
    port: int, user: str, password: str | None, database: str = "analytics"
) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(
        host="127.0.0.1", port=port, dbname=database, user=user, password=password or ""
    )
    conn.autocommit = True
    return conn


def test_dev_runs_the_pipelines_as_a_role_without_role_privileges() -> None:
    folder = world_readable_tempdir("ap-dev-role-")
    port = free_port()
    datadir = folder / ".data" / "postgres"
    old = LocalPostgres(datadir, port)
    try:
        try:
            old_url = normalise_database_url(old.start())
        except PostgresUnavailable as error:
            pytest.skip(f"no local PostgreSQL binaries: {error}")
        command.upgrade(alembic_config(old_url), "head")
        conn = psycopg2.connect(libpq_url(old_url))
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("CREATE DATABASE dagster")
        conn.close()
        # Dagster's tables, as an earlier `make dev` left them: the superuser's.
        conn = psycopg2.connect(libpq_url(old_url).replace("/analytics", "/dagster"))
        with conn, conn.cursor() as cursor:
            cursor.execute("CREATE TABLE runs (id bigserial PRIMARY KEY, status text)")
        conn.close()
        old.stop()

        for name in ("alembic.ini", "migrations"):
            (folder / name).symlink_to(PROJECT_ROOT / name)
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "DATABASE_URL",
                "STORAGE_URL",
                "CATALOG_DIR",
                "DAGSTER_HOME",
                "ACCESS_ADMIN_DATABASE_URL",
            )
        }
        done = subprocess.run(
            [str(VENV_BIN / "analytics-pipelines"), "dev", "--no-ui", "--pg-port", str(port)],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        assert "pipelines connect as role analytics_pipelines" in done.stderr
        assert "access: 3 audience(s) applied" in done.stderr, done.stderr[-3000:]
        password_file = folder / ".data" / "runtime-db-password"
        assert password_file.stat().st_mode & 0o077 == 0
        password = password_file.read_text().strip()

        def dev_db(action: str) -> str:
            return cli(env, "dev-db", action, "--port", str(port), cwd=folder).strip()

        # The database on its own, as README "Migrations" starts it: the runtime role's URL.
        started = dev_db("start")
        assert started == dev_db("url")
        assert started.startswith("postgresql://analytics_pipelines:") and password in started
        admin = psycopg2.connect(dev_db("admin-url"))
        with admin.cursor() as cursor:
            cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            assert cursor.fetchone() == (True,)
        admin.close()
        # Over TCP nobody gets in without the password, the superuser included.
        for user in ("analytics_pipelines", "postgres"):
            with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
                tcp(port, user, None)
            with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
                tcp(port, user, "guessed")
        runtime = tcp(port, "analytics_pipelines", password)
        try:
            with runtime.cursor() as cursor:
                cursor.execute(
                    "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolcanlogin"
                    " FROM pg_roles WHERE rolname = current_user"
                )
                assert cursor.fetchone() == (False, False, False, False, True)
                cursor.execute(
                    "SELECT DISTINCT tableowner FROM pg_tables"
                    " WHERE schemaname IN ('kpi', 'ingest', 'quarantine', 'raw', 'clean')"
                )
                assert cursor.fetchall() == [("analytics_pipelines",)]
                # The audiences' policies exist; as the tables' owner the pipeline reads and
                # writes every row regardless.
                cursor.execute(
                    "SELECT tablename FROM pg_policies WHERE schemaname = 'kpi'"
                    " AND policyname = 'ap_audience_sales_north' ORDER BY tablename"
                )
                assert cursor.fetchall() == [
                    ("anomaly_verdicts",),
                    ("forecast_values",),
                    ("kpi_values",),
                ]
                cursor.execute(
                    "INSERT INTO kpi.kpi_values (kpi, grain, period_start, period_end, dimensions,"
                    " value) VALUES ('gross_revenue', 'day', '2026-01-05T00:00Z',"
                    " '2026-01-06T00:00Z', '{}', 7)"
                )
                cursor.execute("SELECT value FROM kpi.kpi_values WHERE dimensions = '{}'")
                assert cursor.fetchall() == [(7,)]
                with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="create role"):
                    cursor.execute("CREATE ROLE sneaky LOGIN")
                with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="set role"):
                    cursor.execute("SET ROLE postgres")
        finally:
            runtime.close()
        dagster = tcp(port, "analytics_pipelines", password, database="dagster")
        with dagster.cursor() as cursor:
            cursor.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
            assert cursor.fetchall() == [("analytics_pipelines",)]
        dagster.close()
        dev_db("stop")
    finally:
        LocalPostgres(datadir, port).destroy()
        shutil.rmtree(folder, ignore_errors=True)
