"""Read stored KPI values back: one grain, a range of local dates, one breakdown.

Through psycopg2 alone (`lib.pg`): `analytics-pipelines kpi show` answers without importing
SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from psycopg2 import sql

from analytics_pipelines.lib.catalog import KpiSpec
from analytics_pipelines.lib.catalog.models import Grain
from analytics_pipelines.lib.pg import DbApiConnection, fetch_all

# The instant a local date starts in a zone (as `periods.local_midnight_sql` computes it); a
# breakdown is the sorted set of a row's dimension names ('{}' the total).
_VALUES = sql.SQL(
    "SELECT period_start, period_end, dimensions, value FROM {table} "
    "WHERE kpi = %(kpi)s AND grain = %(grain)s "
    "AND period_start >= timezone(%(tz)s, CAST(%(first)s AS date)::timestamp) "
    "AND period_start < timezone(%(tz)s, CAST(%(after)s AS date)::timestamp) "
    "AND ARRAY(SELECT k FROM jsonb_object_keys(dimensions) AS k ORDER BY k) "
    "= CAST(%(breakdown)s AS text[]) "
    "ORDER BY period_start, CAST(dimensions AS text)"
).format(table=sql.Identifier("kpi", "kpi_values"))


class KpiQueryError(ValueError):
    """The question does not fit the KPI (unknown grain or dimension, empty range)."""


@dataclass(frozen=True)
class KpiValue:
    period_start: dt.datetime  # in the KPI's time zone
    period_end: dt.datetime
    dimensions: dict[str, Any]
    value: Decimal | None


def period_label(grain: Grain, start: dt.datetime) -> str:
    """How people write the period: 2026-03-29 02:00+01:00, 2026-03-29, 2026-03, 2026-Q1, 2026."""
    if grain == "hour":
        return start.isoformat(sep=" ", timespec="minutes")
    if grain in ("day", "week"):
        return start.date().isoformat()
    if grain == "month":
        return f"{start.year}-{start.month:02d}"
    if grain == "quarter":
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    return str(start.year)


def read_values(
    conn: DbApiConnection,
    kpi: KpiSpec,
    grain: Grain,
    first_day: dt.date,
    last_day: dt.date,
    by: Sequence[str] = (),
) -> list[KpiValue]:
    """Values of the periods starting on the local dates [first_day, last_day].

    `by` picks the breakdown: no dimension gives the total, `["region"]` one row per region.
    """
    if grain not in kpi.grains:
        raise KpiQueryError(
            f"kpi {kpi.name} is not computed per {grain} (grains: {', '.join(kpi.grains)})"
        )
    unknown = [d for d in by if d not in kpi.dimensions]
    if unknown:
        declared = ", ".join(kpi.dimensions) or "none"
        raise KpiQueryError(
            f"kpi {kpi.name} has no dimension {', '.join(unknown)} (dimensions: {declared})"
        )
    if last_day < first_day:
        raise KpiQueryError(f"--from {first_day} is after --to {last_day}")
    rows = fetch_all(
        conn,
        _VALUES,
        {
            "kpi": kpi.name,
            "grain": grain,
            "tz": kpi.timezone,
            "first": first_day,
            "after": last_day + dt.timedelta(days=1),
            "breakdown": sorted(set(by)),
        },
    )
    zone = ZoneInfo(kpi.timezone)
    return [
        KpiValue(
            row.period_start.astimezone(zone),
            row.period_end.astimezone(zone),
            dict(row.dimensions),
            row.value,
        )
        for row in rows
    ]
