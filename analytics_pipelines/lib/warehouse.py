"""The PostgreSQL warehouse: a pooled SQLAlchemy engine on psycopg2 with transaction and COPY helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import sqlalchemy as sa
from psycopg2 import sql
from sqlalchemy.engine import Connection, Engine

from analytics_pipelines.lib.pg import DbApiConnection, WarehouseError, describe_db_error
from analytics_pipelines.lib.settings import mask_url, normalise_database_url

__all__ = ["Warehouse", "WarehouseError", "copy_from", "dbapi_connection", "describe_db_error"]


class Warehouse:
    """One engine per process; connections come from its pool."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        connect_timeout: int = 5,
        application_name: str = "analytics_pipelines",
    ) -> None:
        self.url = normalise_database_url(url)
        self.masked_url = mask_url(self.url)
        self.engine: Engine = sa.create_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": connect_timeout,
                "application_name": application_name,
                # The clean stage stages a load's rows in temporary tables; PostgreSQL's 8 MB
                # default for those makes every pass over a large file spill to disk.
                "options": "-c temp_buffers=256MB -c work_mem=64MB",
            },
        )

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def ping(self) -> None:
        """Raise WarehouseError with a readable reason unless the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as error:
            raise WarehouseError(describe_db_error(error)) from error

    def scalar(self, statement: Any, params: dict[str, Any] | None = None) -> Any:
        with self.connect() as conn:
            return conn.execute(statement, params or {}).scalar()


def dbapi_connection(conn: Connection) -> DbApiConnection:
    """The psycopg2 connection under `conn`, inside its transaction (for `lib.pg` queries, COPY)."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    return dbapi


def copy_from(
    conn: Connection,
    table: tuple[str, str],
    columns: list[str],
    stream: IO[bytes] | IO[str],
    *,
    format: str = "csv",
    options: dict[str, str | bool] | None = None,
) -> int:
    """Stream `stream` into `schema.table(columns)` with COPY inside the caller's transaction.

    Identifiers are quoted by psycopg2; option values are literals quoted by psycopg2 too. The
    format and the option names are keywords, not values, so they come from allow-lists.
    Returns the number of rows COPY reported.
    """
    if format.lower() not in _COPY_FORMATS:
        raise ValueError(
            f"unsupported COPY format {format!r} (one of: {', '.join(sorted(_COPY_FORMATS))})"
        )
    opts: list[sql.Composable] = [sql.SQL("FORMAT {}").format(sql.SQL(format.lower()))]
    for key, value in (options or {}).items():
        if key.upper() not in _COPY_OPTIONS:
            raise ValueError(
                f"unsupported COPY option {key!r} (one of: {', '.join(sorted(_COPY_OPTIONS))})"
            )
        rendered = (
            sql.SQL("true" if value else "false") if isinstance(value, bool) else sql.Literal(value)
        )
        opts.append(sql.SQL("{} {}").format(sql.SQL(key.upper()), rendered))
    statement = sql.SQL("COPY {}.{} ({}) FROM STDIN WITH ({})").format(
        sql.Identifier(table[0]),
        sql.Identifier(table[1]),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(opts),
    )
    cursor: Any = dbapi_connection(conn).cursor()
    try:
        cursor.copy_expert(statement, stream, size=1 << 20)
        return int(cursor.rowcount)
    finally:
        cursor.close()


_COPY_FORMATS = frozenset({"text", "csv", "binary"})
_COPY_OPTIONS = frozenset(
    {"DELIMITER", "NULL", "HEADER", "QUOTE", "ESCAPE", "ENCODING", "FORCE_NOT_NULL"}
)
