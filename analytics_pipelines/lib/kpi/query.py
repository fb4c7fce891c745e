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

# Re-exported: the engine and the CLI read labels from here.
from analytics_pipelines.lib.kpi.display import period_label as period_label
from analytics_pipelines.lib.kpi.period_over_period import COLUMNS, columns_sql, joins_sql
from analytics_pipelines.lib.kpi.targets import status_sql, target_sql
from analytics_pipelines.lib.pg import DbApiConnection, fetch_all

# The instant a local date starts in a zone (as `periods.local_midnight_sql` computes it); a
# breakdown is the sorted set of a row's dimension names ('{}' the total).
# The previous and year-ago values join on the primary key (lib/kpi/period_over_period.py).
_VALUES = (
    "SELECT v.period_start, v.period_end, v.dimensions, v.value, {target} AS target, "
    "{status} AS target_status, {comparisons} FROM {table} AS v {joins} "
    "WHERE v.kpi = %(kpi)s AND v.grain = %(grain)s "
    "AND v.period_start >= timezone(%(tz)s, CAST(%(first)s AS date)::timestamp) "
    "AND v.period_start < timezone(%(tz)s, CAST(%(after)s AS date)::timestamp) "
    "AND (ARRAY(SELECT k FROM jsonb_object_keys(v.dimensions) AS k ORDER BY k) "
    "= CAST(%(breakdown)s AS text[]) OR (%(with_total)s AND v.dimensions = CAST('{{}}' AS jsonb))) "
    "ORDER BY v.period_start, v.dimensions = CAST('{{}}' AS jsonb), CAST(v.dimensions AS text)"
)


class KpiQueryError(ValueError):
    """The question does not fit the KPI (unknown grain or dimension, empty range)."""


@dataclass(frozen=True)
class KpiValue:
    period_start: dt.datetime  # in the KPI's time zone
    period_end: dt.datetime
    dimensions: dict[str, Any]
    value: Decimal | None
    target: Decimal | None = None  # lib/kpi/targets.py: NULL where no target applies
    target_status: str | None = None
    # lib/kpi/period_over_period.py: NULL where the base period has no value (growth: or is 0)
    previous_value: Decimal | None = None
    previous_diff: Decimal | None = None
    previous_growth: Decimal | None = None
    year_ago_value: Decimal | None = None
    year_ago_diff: Decimal | None = None
    year_ago_growth: Decimal | None = None


def read_values(
    conn: DbApiConnection,
    kpi: KpiSpec,
    grain: Grain,
    first_day: dt.date,
    last_day: dt.date,
    by: Sequence[str] = (),
    with_total: bool = False,
) -> list[KpiValue]:
    """Values of the periods starting on the local dates [first_day, last_day].

    `by` picks the breakdown: no dimension gives the total, `["region"]` one row per region;
    `with_total` adds each period's total after its breakdown rows.
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
    target = target_sql(kpi, sql.Identifier("v", "grain"), sql.Identifier("v", "dimensions"))
    statement = sql.SQL(_VALUES).format(
        target=target,
        status=status_sql(kpi, sql.Identifier("v", "value"), target),
        comparisons=sql.SQL(", ").join(columns_sql("v")),
        table=sql.Identifier("kpi", "kpi_values"),
        joins=joins_sql("v", sql.Placeholder("tz")),
    )
    rows = fetch_all(
        conn,
        statement,
        {
            "kpi": kpi.name,
            "grain": grain,
            "tz": kpi.timezone,
            "first": first_day,
            "after": last_day + dt.timedelta(days=1),
            "breakdown": sorted(set(by)),
            "with_total": with_total and bool(by),
        },
    )
    zone = ZoneInfo(kpi.timezone)
    return [
        KpiValue(
            row.period_start.astimezone(zone),
            row.period_end.astimezone(zone),
            dict(row.dimensions),
            row.value,
            row.target,
            row.target_status,
            *(getattr(row, name) for name in COLUMNS),
        )
        for row in rows
    ]
