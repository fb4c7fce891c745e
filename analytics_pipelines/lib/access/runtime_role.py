"""The pipeline's own PostgreSQL role: it logs in with a password, owns the warehouse (and
Dagster's database), and is neither a superuser nor allowed to create roles or databases.

Role management (this module, `access apply`) runs with a separate privilege: a superuser or a
role with CREATEROLE (`ACCESS_ADMIN_DATABASE_URL`; in `make dev` the local server's superuser
through its private socket). Owning the tables lets the pipeline load, refresh and migrate
without a role privilege, and keeps it out of reach of the audiences' row-level security
policies (an owner is not subject to them).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

from analytics_pipelines.lib.pg import libpq_url
from analytics_pipelines.lib.pgserver import LocalPostgres

RUNTIME_ROLE = "analytics_pipelines"
BI_ROLE = "analytics_bi"  # created here beforehand: migration 0004 may not create roles then
WAREHOUSE_SCHEMAS = ("public", "raw", "clean", "quarantine", "ingest", "kpi")


def runtime_password(path: Path) -> str:
    """The runtime role's password, made once and kept owner-readable only."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    password = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(password + "\n", encoding="utf-8")
    return password


def _execute(conn: psycopg2.extensions.connection, statement: sql.Composable) -> None:
    with conn.cursor() as cursor:
        cursor.execute(statement)


def _rows(conn: psycopg2.extensions.connection, query: str, params: tuple[object, ...]) -> list:
    with conn.cursor() as cursor:
        cursor.execute(query, params)
        return list(cursor.fetchall())


def _hand_over_objects(url: str, schemas: tuple[str, ...], role: str) -> None:
    """Make `role` the owner of the schemas of one database and of what they hold."""
    conn = psycopg2.connect(libpq_url(url))
    try:
        with conn:
            name = sql.Identifier(role)
            for (schema,) in _rows(
                conn,
                "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)"
                " AND nspowner <> %s::regrole",
                (list(schemas), role),
            ):
                _execute(
                    conn,
                    sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(schema), name),
                )
            # Tables and views first: a table takes the sequences of its columns along.
            for kinds, keyword in (
                (("r", "p", "f"), "TABLE"),
                (("v",), "VIEW"),
                (("m",), "MATERIALIZED VIEW"),
                (("S",), "SEQUENCE"),
            ):
                for schema, relation in _rows(
                    conn,
                    "SELECT n.nspname, c.relname FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = ANY(%s) AND c.relkind = ANY(%s) AND c.relowner <> %s::regrole",
                    (list(schemas), list(kinds), role),
                ):
                    _execute(
                        conn,
                        sql.SQL("ALTER {} {} OWNER TO {}").format(
                            sql.SQL(keyword), sql.Identifier(schema, relation), name
                        ),
                    )
    finally:
        conn.close()


def prepare_runtime_role(
    admin_url: str, database: str, dagster_database: str, password: str
) -> None:
    """As the admin: the runtime role (login, password, no role or database privilege), the
    owner of `database` and `dagster_database` and everything in them; `analytics_bi` exists."""
    conn = psycopg2.connect(libpq_url(admin_url))
    conn.autocommit = True
    try:
        role = sql.Identifier(RUNTIME_ROLE)
        exists = _rows(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", (RUNTIME_ROLE,))
        _execute(
            conn,
            sql.SQL(
                "{} {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS"
            ).format(
                sql.SQL("ALTER ROLE" if exists else "CREATE ROLE"), role, sql.Literal(password)
            ),
        )
        if not _rows(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", (BI_ROLE,)):
            _execute(conn, sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(BI_ROLE)))
        for name in (database, dagster_database):
            if not _rows(conn, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)):
                _execute(
                    conn, sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), role)
                )
            else:
                _execute(
                    conn,
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), role),
                )
    finally:
        conn.close()
    _hand_over_objects(admin_url, WAREHOUSE_SCHEMAS, RUNTIME_ROLE)
    _hand_over_objects(_with_database(admin_url, dagster_database), ("public",), RUNTIME_ROLE)


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def runtime_url(host: str, port: int, database: str, password: str) -> str:
    """The runtime role's URL over TCP (the password quoted for a URL)."""
    return f"postgresql://{RUNTIME_ROLE}:{quote(password, safe='')}@{host}:{port}/{database}"


def runtime_login(server: LocalPostgres, password_file: Path) -> tuple[str, str]:
    """On a local server (`make dev`, `dev-db start`): the runtime role made or updated by the
    superuser; its URL over TCP and the superuser's through the socket."""
    password = runtime_password(password_file)
    prepare_runtime_role(server.admin_url, server.database, "dagster", password)
    return runtime_url("127.0.0.1", server.port, server.database, password), server.admin_url
