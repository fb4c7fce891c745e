"""Which local dates a KPI's data covers: the range `analytics-pipelines refresh` recomputes when
no `--from`/`--to` is given."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from analytics_pipelines.lib.catalog import SourceSpec
from analytics_pipelines.lib.kpi.engine import clean_table_exists
from analytics_pipelines.lib.tables import clean_table
from analytics_pipelines.lib.warehouse import Warehouse


def source_dates(
    warehouse: Warehouse, source: SourceSpec, timezone: str
) -> tuple[dt.date, dt.date] | None:
    """First and last local date (in `timezone`) of the clean rows' event time; None when the
    source has no clean row yet, or is a reference (it has no event time: its rows belong to
    no period)."""
    if source.kind == "reference":
        return None
    table = clean_table(source)
    event = table.c[source.event_column]
    zone = sa.literal(timezone, sa.Text())
    with warehouse.connect() as conn:
        if not clean_table_exists(conn, source):
            return None
        low: sa.ColumnElement[Any]
        high: sa.ColumnElement[Any]
        if source.column(source.event_column).type == "date":
            # A date is the business day itself, whatever the zone.
            low, high = sa.func.min(event), sa.func.max(event)
        else:
            # min/max first (the event-time index answers them), then the zone: the conversion
            # keeps the order of instants.
            low = sa.cast(sa.func.timezone(zone, sa.func.min(event)), sa.Date())
            high = sa.cast(sa.func.timezone(zone, sa.func.max(event)), sa.Date())
        first, last = conn.execute(sa.select(low, high)).one()
    return None if first is None else (first, last)


def data_dates(
    warehouse: Warehouse, sources: Iterable[SourceSpec], timezone: str
) -> tuple[dt.date, dt.date] | None:
    """The union of `source_dates` over several sources (a derived KPI's inputs)."""
    ranges = [r for s in sources if (r := source_dates(warehouse, s, timezone)) is not None]
    if not ranges:
        return None
    return min(first for first, _ in ranges), max(last for _, last in ranges)
