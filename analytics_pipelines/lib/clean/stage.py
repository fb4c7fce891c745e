"""Rows cleaned after their COPY: raw text out of PostgreSQL, the rule engine, a typed stage.

The rows to clean (a relation of text columns plus `_file_id` and `_line`: raw rows of file
versions, quarantined rows to replay) are copied out as CSV and checked in batches by the
rule engine (`rules`). Each row's verdict, its normalised text when it passes and its raw
values and failures when it does not, goes back in by COPY; the passing rows are then typed
by PostgreSQL's own casts (plain casts that cannot fail: the rules accept only text they
cast) into a transaction-local staging table, from which `merge` does the set operations.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean.rules import BAD, NORMALISED, RuleEngine
from analytics_pipelines.lib.tables import FILE_ID, LINE, LOADED_AT, SQL_TYPES, temporary_table
from analytics_pipelines.lib.warehouse import copy_from, dbapi_connection

STAGE_TABLE = "_clean_stage"
VERDICTS_TABLE = "_clean_verdicts"
OK, RAW, FAILURES = "_ok", "_raw", "_failures"
# Rows per batch the rule engine checks: large enough for polars' parallelism, small enough
# to keep memory flat.
BATCH_ROWS = 250_000


@dataclass(frozen=True)
class RawInput:
    """Rows to validate: a relation with text columns plus `_file_id` and `_line`."""

    relation: sa.FromClause
    text_columns: list[str]
    where: sa.ColumnElement[bool] | None = None


def raw_input_table(schema: str, name: str, live: dict[str, str]) -> sa.Table:
    """A Core table for a live raw-shaped relation (every non-lineage column is text)."""
    text_columns = [c for c in live if c not in (FILE_ID, LINE, LOADED_AT)]
    return sa.Table(
        name,
        sa.MetaData(),
        *(sa.Column(c, sa.Text) for c in text_columns),
        sa.Column(FILE_ID, sa.BigInteger),
        sa.Column(LINE, sa.BigInteger),
        schema=schema,
    )


def _stage_shape(name: str, source: SourceSpec, typed: bool) -> sa.Table:
    """A transaction-local table of staged rows: the declared columns (typed as in clean, or
    as text), lineage, the verdict, and for failing rows the raw values and failures."""
    json_type: sa.types.TypeEngine = postgresql.JSONB() if typed else sa.Text()
    return temporary_table(
        name,
        *(sa.Column(c.name, SQL_TYPES[c.type] if typed else sa.Text) for c in source.columns),
        sa.Column(FILE_ID, sa.BigInteger, nullable=False),
        sa.Column(LINE, sa.BigInteger, nullable=False),
        sa.Column(OK, sa.Boolean, nullable=False),
        sa.Column(RAW, json_type),
        sa.Column(FAILURES, json_type),
    )


def stage_table(source: SourceSpec) -> sa.Table:
    return _stage_shape(STAGE_TABLE, source, typed=True)


def _copy_out(conn: Connection, select: sa.Select, sink: Any) -> None:
    """COPY the result of `select` to `sink` as CSV (bound values inlined by psycopg2)."""
    compiled = select.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    cursor: Any = dbapi_connection(conn).cursor()
    try:
        query = cursor.mogrify(str(compiled), compiled.params).decode()
        cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", sink, size=1 << 20)
    finally:
        cursor.close()


@contextlib.contextmanager
def spooled_rows(conn: Connection, rows: RawInput) -> Iterator[Any]:
    """The rows of `rows` copied out as CSV into a temporary file (bounded memory; the
    connection is free again for the COPY that follows); None when there are none."""
    relation = rows.relation
    select = sa.select(
        *(relation.c[name] for name in rows.text_columns), relation.c[FILE_ID], relation.c[LINE]
    )
    if rows.where is not None:
        select = select.where(rows.where)
    with tempfile.NamedTemporaryFile(suffix=".csv") as spool:
        # The file object itself: its wrapper costs a call per row COPY writes.
        _copy_out(conn, select, spool.file)
        spool.flush()
        yield spool if spool.tell() else None


def batches_of(spool: Any, rows: RawInput) -> Iterator[pl.DataFrame]:
    """The spooled rows as frames of text, BATCH_ROWS at a time."""
    schema = {name: pl.String for name in rows.text_columns} | {FILE_ID: pl.Int64, LINE: pl.Int64}
    scan = pl.scan_csv(spool.name, has_header=False, schema=schema)
    yield from scan.collect_batches(chunk_size=BATCH_ROWS)


def _verdicts(source: SourceSpec, checked_staged: pl.DataFrame, quarantine: pl.DataFrame) -> bytes:
    """One batch's verdict rows as CSV (columns of `_verdicts_table`)."""
    passing = checked_staged.filter(~pl.col(BAD)).select(
        *(pl.col(f"{NORMALISED}{c.name}").alias(c.name) for c in source.columns),
        pl.col(FILE_ID),
        pl.col(LINE),
        pl.lit(True).alias(OK),
        pl.lit(None, pl.String).alias(RAW),
        pl.lit(None, pl.String).alias(FAILURES),
    )
    failing = quarantine.select(
        *(pl.lit(None, pl.String).alias(c.name) for c in source.columns),
        pl.col("file_id").alias(FILE_ID),
        pl.col("line").alias(LINE),
        pl.lit(False).alias(OK),
        pl.col("raw_values").alias(RAW),
        pl.col("failures").alias(FAILURES),
    )
    out = io.BytesIO()
    pl.concat([passing, failing]).write_csv(out, include_header=False)
    return out.getvalue()


def build_stage(conn: Connection, source: SourceSpec, rows: RawInput) -> sa.Table:
    """Check `rows` with the rule engine and fill the typed staging table (dropped at commit).

    The caller's transaction sets TimeZone to the source's zone: naive timestamps are read
    in it by the casts, as PostgreSQL reads them everywhere else.
    """
    engine = RuleEngine(source, rows.text_columns)
    # The rule engine's verdicts as text: normalised values of passing rows, else raw + why.
    verdicts = _stage_shape(VERDICTS_TABLE, source, typed=False)
    verdicts.create(conn)
    names = [c.name for c in verdicts.columns]
    with spooled_rows(conn, rows) as spool:
        for frame in batches_of(spool, rows) if spool is not None else ():
            checked = engine.check(frame)
            body = io.BytesIO(_verdicts(source, checked.staged, checked.quarantine))
            copy_from(conn, ("pg_temp", VERDICTS_TABLE), names, body)
    stage = stage_table(source)
    stage.create(conn)
    conn.execute(
        sa.insert(stage).from_select(
            names,
            sa.select(
                *(sa.cast(verdicts.c[c.name], SQL_TYPES[c.type]) for c in source.columns),
                verdicts.c[FILE_ID],
                verdicts.c[LINE],
                verdicts.c[OK],
                sa.cast(verdicts.c[RAW], postgresql.JSONB),
                sa.cast(verdicts.c[FAILURES], postgresql.JSONB),
            ),
        )
    )
    verdicts.drop(conn)
    conn.execute(sa.text(f"ANALYZE {STAGE_TABLE}"))
    return stage
