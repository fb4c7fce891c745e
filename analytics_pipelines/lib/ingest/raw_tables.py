"""`raw.<source>` tables: creation, lineage defaults, column evolution, header-to-column mapping.

`raw.<source>` is partitioned by file version: each version's rows are written to a table of
their own (`open_file_table`) and attached as its partition when complete. So a COPY maintains
no index row by row (the BRIN index on `_file_id` it replaces was a quarter of the raw COPY's
server time, bench/README.md), and a per-file lookup (supersede, clean, preview) reads one
partition. A superseded version's rows are deleted row by row like any other rows, so readers
of raw never wait for a load; its emptied partition is dropped by a later load of the source
(`drop_emptied_partitions`), which waits at most 0.2 s for readers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest import statuses
from analytics_pipelines.lib.ingest.errors import FileRejected
from analytics_pipelines.lib.tables import FILE_ID, LINE, RAW_SCHEMA, ledger, raw_table
from analytics_pipelines.lib.warehouse import Warehouse

# The load transaction sets this; the `_file_id` default reads it, so COPY never touches rows.
FILE_ID_SETTING = "analytics.file_id"
# Declared IMMUTABLE on purpose: the planner folds it to a constant once per COPY/INSERT
# statement instead of reading the setting for every row (a measurable share of load time).
# Only the loader writes raw tables, always planning a fresh statement after setting it.
FILE_ID_FUNCTION = "_current_file_id"
_FILE_ID_FUNCTION_DDL = (
    "CREATE OR REPLACE FUNCTION {}.{}() RETURNS bigint LANGUAGE sql IMMUTABLE "
    "AS $fn$ SELECT current_setting('analytics.file_id')::bigint $fn$"
)
_IDENTIFIER_MAX = 63
# PostgreSQL's limit on a table's columns; dropped columns keep their slot and count too.
MAX_TABLE_COLUMNS = 1600


def run_sql(
    conn: Connection, statement: sql.Composable, params: Sequence[Any] | None = None
) -> list[tuple[Any, ...]]:
    """Execute a psycopg2 Composable on the connection's current transaction; rows if any."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.execute(statement, params)
        return list(cursor.fetchall()) if cursor.description else []
    finally:
        cursor.close()


def line_sequence(source: str) -> str:
    return f"{source}__line"[:_IDENTIFIER_MAX]


def line_sequence_regclass(source: str) -> str:
    """The sequence as `'raw."name"'`, suitable as a bound regclass parameter."""
    return f'{RAW_SCHEMA}."{line_sequence(source)}"'


def table_ident(source: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(RAW_SCHEMA), sql.Identifier(source))


def file_table_name(source: str, file_id: int) -> str:
    """`<source>#<file id>`: `#` is not allowed in source names, and file ids are unique."""
    suffix = f"#{int(file_id)}"
    return source[: _IDENTIFIER_MAX - len(suffix)] + suffix


def file_table_statements(source: str, file_id: int) -> tuple[sql.Composed, sql.Composed]:
    """CREATE of one file version's table, shaped like `raw.<source>` now, and its ATTACH.

    The CHECK lets the ATTACH skip scanning the rows the table already holds; ATTACH takes a
    SHARE UPDATE EXCLUSIVE lock on `raw.<source>`, which readers and writers do not wait for.
    """
    names = {
        "table": table_ident(source),
        "file": sql.Identifier(RAW_SCHEMA, file_table_name(source, file_id)),
        "file_id": sql.Identifier(FILE_ID),
        "value": sql.Literal(int(file_id)),
    }
    create = sql.SQL(
        "CREATE TABLE {file} (LIKE {table} INCLUDING DEFAULTS, CHECK ({file_id} = {value}))"
    ).format(**names)
    attach = sql.SQL("ALTER TABLE {table} ATTACH PARTITION {file} FOR VALUES IN ({value})")
    return create, attach.format(**names)


def raw_column_name(name: str) -> str:
    """A received column name as a raw column: lower case letters, digits and underscores."""
    cleaned = re.sub(r"[^a-z0-9_]+", "_", name.strip().lower()).strip("_")
    cleaned = re.sub(r"_+", "_", cleaned)
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"c_{cleaned}".rstrip("_")
    return cleaned[:_IDENTIFIER_MAX]


@dataclass(frozen=True)
class ColumnMapping:
    """Raw column for each received column (file order), and which of them the catalog lacks."""

    targets: list[str]
    extra: list[str]
    # Extra raw column -> the header text the file spelled it with (kept in the ledger).
    extra_headers: dict[str, str]


def map_columns(source: SourceSpec, received: Sequence[str]) -> ColumnMapping:
    """Match received names to declared columns; FileRejected if a required one is absent."""
    declared = {c.name for c in source.columns}
    targets: list[str] = []
    extra: list[str] = []
    extra_headers: dict[str, str] = {}
    seen: dict[str, int] = {}
    for position, name in enumerate(received, start=1):
        if name in declared:
            target = name
        elif not name.strip():
            target = f"column_{position}"
        else:
            target = raw_column_name(name)
        if target in seen:
            raise FileRejected(
                f"column {name!r} appears twice in the header (columns {seen[target]} and {position})"
            )
        seen[target] = position
        targets.append(target)
        if target not in declared:
            extra.append(target)
            extra_headers[target] = name
    required_missing = [c.name for c in source.columns if c.required and c.name not in seen]
    if required_missing:
        shown = ", ".join(received[:20]) + (" …" if len(received) > 20 else "")
        raise FileRejected(
            f"missing required column(s) {', '.join(required_missing)} "
            f"(the header has: {shown or 'nothing'})"
        )
    return ColumnMapping(targets=targets, extra=extra, extra_headers=extra_headers)


def existing_columns(conn: Connection, source: str) -> list[str]:
    rows = run_sql(
        conn,
        sql.SQL(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position"
        ),
        [RAW_SCHEMA, source],
    )
    return [r[0] for r in rows]


def _lineage_ready(conn: Connection, source: str) -> bool:
    rows = run_sql(
        conn,
        sql.SQL(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s AND ("
            "(column_name = %s AND column_default LIKE %s) "
            "OR (column_name = %s AND column_default LIKE 'nextval%%'))"
        ),
        [RAW_SCHEMA, source, FILE_ID, f"%{FILE_ID_FUNCTION}%", LINE],
    )
    return bool(rows[0][0] == 2)


def _ensure_file_id_function(conn: Connection) -> None:
    # One lock for all sources: concurrent CREATE OR REPLACE of one function can collide.
    run_sql(conn, sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended('ingest:ddl', 0))"))
    run_sql(
        conn,
        sql.SQL(_FILE_ID_FUNCTION_DDL).format(
            sql.Identifier(RAW_SCHEMA), sql.Identifier(FILE_ID_FUNCTION)
        ),
    )


def ensure_raw_table(warehouse: Warehouse, source: SourceSpec) -> None:
    """Create `raw.<source>` with its lineage defaults if missing (idempotent, cheap).

    A table of the earlier single-table layout is converted to partitions once, rows kept.
    """
    with warehouse.begin() as conn:
        lock_source(conn, source.name)
        current = existing_columns(conn, source.name)
        if not current:
            raw_table(source).create(conn, checkfirst=True)
        else:
            if not _partitioned(conn, source.name):
                _convert_to_partitions(conn, source.name, current)
            missing = [c.name for c in source.columns if c.name not in current]
            if missing:
                _add_columns(conn, source.name, missing)
        if _lineage_ready(conn, source.name):
            return
        _ensure_file_id_function(conn)
        table = table_ident(source.name)
        sequence = sql.SQL("{}.{}").format(
            sql.Identifier(RAW_SCHEMA), sql.Identifier(line_sequence(source.name))
        )
        # CACHE: nextval per COPY row stays in session memory; every load starts with setval
        # in its own session, which discards that session's cache, so numbering stays exact.
        run_sql(conn, sql.SQL("CREATE SEQUENCE IF NOT EXISTS {} CACHE 1000").format(sequence))
        run_sql(
            conn,
            sql.SQL(
                "ALTER TABLE {table} ALTER COLUMN {file_id} SET DEFAULT {function}(), "
                "ALTER COLUMN {line} SET DEFAULT nextval({seq})"
            ).format(
                table=table,
                file_id=sql.Identifier(FILE_ID),
                function=sql.SQL("{}.{}").format(
                    sql.Identifier(RAW_SCHEMA), sql.Identifier(FILE_ID_FUNCTION)
                ),
                line=sql.Identifier(LINE),
                seq=sql.Literal(line_sequence_regclass(source.name)),
            ),
        )


def drop_emptied_partitions(conn: Connection, source: str) -> list[int]:
    """Drop the partitions of superseded versions, emptied when they were superseded.

    Dropping a partition takes an ACCESS EXCLUSIVE lock on `raw.<source>`, so it is tried
    briefly (a reader of raw, such as a clean step, is never held up for long) and otherwise
    left to the next load. The file ids of the partitions dropped.
    """
    partitions = run_sql(
        conn,
        sql.SQL(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass"
        ),
        [f'{RAW_SCHEMA}."{source}"'],
    )
    by_id = {int(name.rsplit("#", 1)[1]): name for (name,) in partitions if "#" in name}
    if not by_id:
        return []
    superseded = run_sql(
        conn,
        sql.SQL(
            "SELECT file_id FROM {} WHERE file_id = ANY(%s) AND status = %s ORDER BY file_id"
        ).format(sql.Identifier(str(ledger.schema), ledger.name)),
        [sorted(by_id), statuses.SUPERSEDED],
    )
    dropped: list[int] = []
    for (file_id,) in superseded:
        table = sql.Identifier(RAW_SCHEMA, by_id[file_id])
        savepoint = conn.begin_nested()
        try:
            run_sql(conn, sql.SQL("SET LOCAL lock_timeout = '200ms'"))
            if run_sql(conn, sql.SQL("SELECT EXISTS (SELECT FROM {})").format(table))[0][0]:
                savepoint.rollback()
                continue
            run_sql(conn, sql.SQL("DROP TABLE {}").format(table))
        except psycopg2.errors.LockNotAvailable:
            savepoint.rollback()
            break
        savepoint.commit()
        dropped.append(int(file_id))
    run_sql(conn, sql.SQL("SET LOCAL lock_timeout = DEFAULT"))
    return dropped


def _partitioned(conn: Connection, source: str) -> bool:
    rows = run_sql(
        conn,
        sql.SQL("SELECT relkind = 'p' FROM pg_class WHERE oid = %s::regclass"),
        [f'{RAW_SCHEMA}."{source}"'],
    )
    return bool(rows[0][0])


def _convert_to_partitions(conn: Connection, source: str, columns: Sequence[str]) -> None:
    """One partition per file version for a `raw.<source>` of the single-table layout."""
    earlier = f"{source[: _IDENTIFIER_MAX - 8]}#earlier"
    earlier_ident = sql.Identifier(RAW_SCHEMA, earlier)
    run_sql(
        conn,
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(table_ident(source), sql.Identifier(earlier)),
    )
    run_sql(
        conn,
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS) PARTITION BY LIST ({})").format(
            table_ident(source), earlier_ident, sql.Identifier(FILE_ID)
        ),
    )
    file_ids = run_sql(
        conn,
        sql.SQL("SELECT DISTINCT {} FROM {} ORDER BY 1").format(
            sql.Identifier(FILE_ID), earlier_ident
        ),
    )
    for (file_id,) in file_ids:
        _fill_file_table(conn, source, file_id, columns, earlier_ident, file_id)
    # Not CASCADE: a view of the user's on the old table stops the conversion, with its name.
    run_sql(conn, sql.SQL("DROP TABLE {}").format(earlier_ident))


def _add_columns(conn: Connection, source: str, columns: Iterable[str]) -> None:
    run_sql(
        conn,
        sql.SQL("ALTER TABLE {} {}").format(
            table_ident(source),
            sql.SQL(", ").join(
                sql.SQL("ADD COLUMN IF NOT EXISTS {} text").format(sql.Identifier(c))
                for c in columns
            ),
        ),
    )


def column_slots_used(conn: Connection, source: str) -> int:
    """Columns of `raw.<source>` as PostgreSQL counts them against its limit: dropped ones too."""
    rows = run_sql(
        conn,
        sql.SQL("SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"),
        [f'{RAW_SCHEMA}."{source}"'],
    )
    return int(rows[0][0])


def add_extra_columns(conn: Connection, source: str, columns: Sequence[str]) -> list[str]:
    """Add text columns for received columns the table lacks, in the caller's transaction.

    Called inside the load's transaction, just before the COPY that fills them: a file that
    fails afterwards rolls its columns back with its rows. FileRejected (nothing changed) when
    the table cannot take that many more columns. The ALTER holds an ACCESS EXCLUSIVE lock on
    `raw.<source>` until the load commits (see the loader's docstring for who waits on it).
    """
    current = set(existing_columns(conn, source))
    new = [c for c in columns if c not in current]
    if not new:
        return []
    room = MAX_TABLE_COLUMNS - column_slots_used(conn, source)
    if len(new) > room:
        raise FileRejected(
            f"the header adds {len(new):,} columns; raw.{source} can take {max(room, 0):,} more: "
            f"PostgreSQL allows {MAX_TABLE_COLUMNS:,}, dropped ones included"
        )
    _add_columns(conn, source, new)
    return new


def open_file_table(
    conn: Connection, source: str, file_id: int, extra_columns: Sequence[str]
) -> str:
    """Add the file's extra columns to `raw.<source>`, then create the table its rows go to.

    In the load's transaction: `attach_file_table` makes the rows part of `raw.<source>`
    once they are all there, and a failed load rolls both the columns and the table back.
    """
    if extra_columns:
        add_extra_columns(conn, source, extra_columns)
    run_sql(conn, file_table_statements(source, file_id)[0])
    return file_table_name(source, file_id)


def attach_file_table(conn: Connection, source: str, file_id: int) -> None:
    run_sql(conn, file_table_statements(source, file_id)[1])


def drop_file_table(conn: Connection, source: str, file_id: int) -> None:
    """Drop a file table not attached yet (no lock on `raw.<source>`)."""
    run_sql(
        conn,
        sql.SQL("DROP TABLE {}").format(
            sql.Identifier(RAW_SCHEMA, file_table_name(source, file_id))
        ),
    )


def hand_over_rows(conn: Connection, source: str, file_id: int, heir: int) -> None:
    """The rows of `file_id` become the rows of `heir` (the same content under another key)."""
    columns = existing_columns(conn, source)
    _fill_file_table(conn, source, heir, columns, table_ident(source), file_id)
    delete_file_rows(conn, source, file_id)


def _fill_file_table(
    conn: Connection,
    source: str,
    file_id: int,
    columns: Sequence[str],
    origin: sql.Composable,
    origin_file_id: int,
) -> None:
    """The file table of `file_id`, holding the rows `origin` has for `origin_file_id`, attached."""
    listed = sql.SQL(", ").join(sql.Identifier(c) for c in columns if c != FILE_ID)
    target = open_file_table(conn, source, file_id, [])
    run_sql(
        conn,
        sql.SQL("INSERT INTO {} ({}, {}) SELECT {}, %s FROM {} WHERE {} = %s").format(
            sql.Identifier(RAW_SCHEMA, target),
            listed,
            sql.Identifier(FILE_ID),
            listed,
            origin,
            sql.Identifier(FILE_ID),
        ),
        [file_id, origin_file_id],
    )
    attach_file_table(conn, source, file_id)


def delete_file_rows(conn: Connection, source: str, file_id: int) -> None:
    """Delete one attached file version's rows (row locks only: readers of raw never wait)."""
    statement = sql.SQL("DELETE FROM {} WHERE {} = %s")
    run_sql(conn, statement.format(table_ident(source), sql.Identifier(FILE_ID)), [file_id])


def lock_source(conn: Connection, source: str) -> None:
    """Serialise loads of one source until the transaction ends (all runs, all processes)."""
    run_sql(
        conn, sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"), [f"ingest:{source}"]
    )


def preview_rows(
    warehouse: Warehouse, source: SourceSpec, file_ids: Sequence[int], limit: int = 5
) -> list[dict[str, Any]]:
    """The first rows loaded from these files, for the materialisation's preview."""
    if not file_ids:
        return []
    statement = sql.SQL("SELECT * FROM {} WHERE {} = ANY(%s) ORDER BY {}, {} LIMIT %s").format(
        table_ident(source.name),
        sql.Identifier(FILE_ID),
        sql.Identifier(FILE_ID),
        sql.Identifier(LINE),
    )
    with warehouse.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            cursor.execute(statement, [list(file_ids), limit])
            names = [d[0] for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()
