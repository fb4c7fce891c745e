"""Business-date range of one loaded file: min/max of its event-time column, read in SQL."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest.raw_tables import run_sql, table_ident
from analytics_pipelines.lib.tables import FILE_ID

# ISO dates and timestamps whose fields are in range, so the cast below cannot fail; anything
# else is ignored here (the clean layer quarantines it with a reason).
NAIVE_ISO_TIMESTAMP = (
    r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"([ T]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?)?"
)
ISO_TIMESTAMP = NAIVE_ISO_TIMESTAMP + r"(Z|[+-](0[0-9]|1[0-5])(:?[0-5][0-9])?)?$"

# Day 29-31 must exist in its month (no 30 February): checked arithmetically, not by casting.
_RANGE_QUERY = """
SELECT min(ts)::date, max(ts)::date FROM (
  SELECT CASE
    WHEN substr(v, 9, 2) <= '28'
      OR (left(v, 7) || '-01')::date + (substr(v, 9, 2)::int - 1)
         < (left(v, 7) || '-01')::date + interval '1 month'
    THEN v::timestamptz END AS ts
  FROM (SELECT {column} AS v FROM {table} WHERE {file_id} = %s) AS r
  WHERE v ~ %s
) AS s
"""


# Naive ISO values order as text exactly as in time, so min/max of the text (bytewise) give the
# dates directly; any value with a zone suffix after the date voids that shortcut.
_TEXT_QUERY = """
SELECT min(v COLLATE "C"), max(v COLLATE "C"),
       bool_or(position('+' in v) > 0 OR position('Z' in v) > 0
               OR position('-' in right(v, -10)) > 0)
FROM (SELECT {column} AS v FROM {table} WHERE {file_id} = %s) AS r
"""
_NAIVE_ISO = re.compile(NAIVE_ISO_TIMESTAMP + "$")


def _naive_date(text: str | None) -> date | None:
    if text is None or not _NAIVE_ISO.match(text):
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


_CAST_QUERY = """
SELECT min(v::timestamptz)::date, max(v::timestamptz)::date
FROM (SELECT {column} AS v FROM {table} WHERE {file_id} = %s) AS r
"""


def naive_text_range(
    low_text: str | None, high_text: str | None, zoned: bool
) -> tuple[date | None, date | None] | None:
    """The business-date range from the text shortcut's min, max and zone flag; None when
    the values need casting to tell."""
    if low_text is None:
        return None, None
    low, high = _naive_date(low_text), _naive_date(high_text)
    if not zoned and low is not None and high is not None:
        return low, high
    return None


def event_date_range(
    conn: Connection, source: SourceSpec, file_id: int, present_columns: Sequence[str]
) -> tuple[date | None, date | None]:
    """(min, max) business date of the file's rows in the session time zone (the source's)."""
    if source.event_time is None or source.event_time not in present_columns:
        return None, None
    names = {
        "column": sql.Identifier(source.event_time),
        "table": table_ident(source.name),
        "file_id": sql.Identifier(FILE_ID),
    }
    [(low_text, high_text, zoned)] = run_sql(conn, sql.SQL(_TEXT_QUERY).format(**names), [file_id])
    dates = naive_text_range(low_text, high_text, zoned)
    if dates is not None:
        return dates
    # Zoned or unusual values: one plain cast per row; if a value does not cast, the savepoint
    # is rolled back and the guarded query decides.
    savepoint = conn.begin_nested()
    try:
        rows = run_sql(conn, sql.SQL(_CAST_QUERY).format(**names), [file_id])
    except psycopg2.DataError:
        savepoint.rollback()
        rows = run_sql(conn, sql.SQL(_RANGE_QUERY).format(**names), [file_id, ISO_TIMESTAMP])
    else:
        savepoint.commit()
    low, high = rows[0]
    return low, high
