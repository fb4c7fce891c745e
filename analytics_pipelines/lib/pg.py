"""PostgreSQL through psycopg2 alone: the read paths of the command line (`kpi show`, `files`,
`health`) answer before SQLAlchemy (about half a second to import) would have loaded.

The modules behind those commands (`lib.kpi.query`, `lib.ingest.file_status`, `lib.health`) take
a DB-API connection: one from `read_only(url)` here, or the one under a SQLAlchemy connection
(`lib.warehouse.dbapi_connection`) inside Dagster, so each query exists once. Values are always
bound parameters (`%(name)s`), identifiers composed by `psycopg2.sql`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from analytics_pipelines.lib.settings import normalise_database_url

DbApiConnection: TypeAlias = psycopg2.extensions.connection


class WarehouseError(Exception):
    """The warehouse could not be reached or refused the operation; the message is for people."""


def describe_db_error(error: BaseException) -> str:
    """Turn a driver error (psycopg2's own, or SQLAlchemy's wrapping it) into one line a person
    can act on."""
    original = getattr(error, "orig", None) or error
    text = str(original).strip().splitlines()[0] if str(original).strip() else repr(original)
    lowered = text.lower()
    if "password authentication failed" in lowered:
        return "wrong user name or password"
    if "connection refused" in lowered or "could not connect" in lowered:
        return f"database unreachable ({text})"
    if "timeout expired" in lowered or "timed out" in lowered:
        return "database unreachable (connection timed out)"
    if "does not exist" in lowered and "database" in lowered:
        return text
    if "could not translate host name" in lowered:
        return f"database host unknown ({text})"
    return text


def libpq_url(url: str) -> str:
    """The URL as libpq reads it (`postgresql://…`, without SQLAlchemy's `+psycopg2`)."""
    return "postgresql://" + normalise_database_url(url).partition("://")[2]


@contextmanager
def read_only(
    url: str, *, connect_timeout: int = 5, application_name: str = "analytics_pipelines"
) -> Iterator[DbApiConnection]:
    """A read-only session (PostgreSQL refuses writes in it), closed on exit.

    Raises WarehouseError with a readable reason when the database cannot be reached.
    """
    try:
        conn = psycopg2.connect(
            libpq_url(url), connect_timeout=connect_timeout, application_name=application_name
        )
    except psycopg2.Error as error:
        raise WarehouseError(describe_db_error(error)) from error
    try:
        conn.set_session(readonly=True, autocommit=True)
        yield conn
    finally:
        conn.close()


def fetch_all(conn: DbApiConnection, statement: Any, params: Any = None) -> list[Any]:
    """Rows as named tuples (`row.column`), like SQLAlchemy rows."""
    with conn.cursor(cursor_factory=psycopg2.extras.NamedTupleCursor) as cursor:
        cursor.execute(statement, params)
        return list(cursor.fetchall())


def execute(conn: DbApiConnection, statement: Any, params: Any = None) -> int:
    """Run a statement that returns no rows; the number of rows it changed."""
    with conn.cursor() as cursor:
        cursor.execute(statement, params)
        return int(cursor.rowcount)
