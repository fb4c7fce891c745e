"""JSON lines polars cannot read exactly (`jsonl_csv`): COPYed as text lines, unpacked in SQL.

The `json` type keeps numbers exactly as written (`1.50` stays `1.50`), and no Python code
touches the rows.
"""

from __future__ import annotations

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest.errors import FileRejected
from analytics_pipelines.lib.ingest.raw_tables import (
    ColumnMapping,
    map_columns,
    open_file_table,
    run_sql,
)
from analytics_pipelines.lib.ingest.readers import CopyPlan
from analytics_pipelines.lib.ingest.translate import describe_copy_error
from analytics_pipelines.lib.tables import LINE, RAW_SCHEMA
from analytics_pipelines.lib.warehouse import copy_from

STAGE = "_ingest_lines"

# Only run when a file was already found bad: pinpoints the first line that is not an object.
_FIRST_BAD_LINE = """
CREATE OR REPLACE FUNCTION pg_temp.ingest_first_bad_json_line(OUT bad_line bigint, OUT reason text)
LANGUAGE plpgsql AS $fn$
DECLARE r record; detail text;
BEGIN
  FOR r IN SELECT n, line FROM pg_temp._ingest_lines
           WHERE line IS NOT NULL AND btrim(line) <> '' ORDER BY n LOOP
    BEGIN
      IF json_typeof(r.line::json) <> 'object' THEN
        bad_line := r.n; reason := 'is a JSON ' || json_typeof(r.line::json) || ', not an object';
        RETURN;
      END IF;
      -- Values become text: an escape text cannot hold (\\u0000) fails here, not in the INSERT.
      PERFORM r.line::jsonb;
    EXCEPTION
      WHEN untranslatable_character THEN
        GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
        bad_line := r.n;
        reason := CASE WHEN detail LIKE '%u0000%'
          THEN 'a value holds a NUL character (\\u0000), which PostgreSQL text cannot hold'
          ELSE 'a value holds a character PostgreSQL text cannot hold (' || SQLERRM || ')' END;
        RETURN;
      WHEN others THEN
        bad_line := r.n; reason := 'is not valid JSON (' || SQLERRM || ')';
        RETURN;
    END;
  END LOOP;
END $fn$
"""


def _first_bad_line(conn: Connection) -> str:
    run_sql(conn, sql.SQL(_FIRST_BAD_LINE))
    rows = run_sql(conn, sql.SQL("SELECT * FROM pg_temp.ingest_first_bad_json_line()"))
    bad_line, reason = rows[0] if rows else (None, None)
    if bad_line is None:
        return "the JSON lines cannot be read"
    return f"line {bad_line}: {reason}"


def stage_and_insert_jsonl(
    conn: Connection, source: SourceSpec, plan: CopyPlan, file_id: int
) -> tuple[int, ColumnMapping]:
    """The rows inserted into the file's raw table and the raw column of each key."""
    run_sql(
        conn,
        sql.SQL(
            "CREATE TEMP TABLE {} (n bigint GENERATED ALWAYS AS IDENTITY, line text) ON COMMIT DROP"
        ).format(sql.Identifier(STAGE)),
    )
    try:
        copy_from(conn, ("pg_temp", STAGE), ["line"], plan.body, options=plan.options)
    except psycopg2.DataError as error:
        raise FileRejected(describe_copy_error(error, source, 1, 1)) from None
    nested = conn.begin_nested()
    try:
        keys = [
            r[0]
            for r in run_sql(
                conn,
                sql.SQL(
                    "SELECT k FROM (SELECT k, min(n) AS first_seen FROM pg_temp.{}, "
                    "json_object_keys(line::json) AS k "
                    "WHERE line IS NOT NULL AND btrim(line) <> '' GROUP BY k) AS s "
                    "ORDER BY first_seen, k"
                ).format(sql.Identifier(STAGE)),
            )
        ]
    except psycopg2.DataError:
        nested.rollback()
        raise FileRejected(_first_bad_line(conn)) from None
    nested.commit()
    if not keys:
        raise FileRejected("the file is empty (no JSON objects)")
    mapping = map_columns(source, keys)
    target = open_file_table(conn, source.name, file_id, mapping.extra)
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    statement = sql.SQL(
        "INSERT INTO {table} ({targets}, {line}) SELECT {values}, t.n "
        "FROM pg_temp.{stage} AS t, json_to_record(t.line::json) AS r({definitions}) "
        "WHERE t.line IS NOT NULL AND btrim(t.line) <> ''"
    ).format(
        table=sql.Identifier(RAW_SCHEMA, target),
        targets=sql.SQL(", ").join(sql.Identifier(c) for c in mapping.targets),
        line=sql.Identifier(LINE),
        values=sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(k)) for k in keys),
        stage=sql.Identifier(STAGE),
        definitions=sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(k)) for k in keys),
    )
    cursor = dbapi.cursor()
    nested = conn.begin_nested()
    try:
        cursor.execute(statement)
        rows = int(cursor.rowcount)
    except psycopg2.DataError:
        nested.rollback()
        raise FileRejected(_first_bad_line(conn)) from None
    finally:
        cursor.close()
    nested.commit()
    return rows, mapping
