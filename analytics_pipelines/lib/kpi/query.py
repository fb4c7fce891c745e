"""Read stored KPI values back: one grain, a range of local dates, one breakdown."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog import KpiSpec
from analytics_pipelines.lib.catalog.models import Grain
from analytics_pipelines.lib.kpi.periods import local_midnight_sql
from analytics_pipelines.lib.tables import kpi_values


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
    conn: Connection,
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
    tz = kpi.timezone
    breakdown = sa.text(
        "ARRAY(SELECT k FROM jsonb_object_keys(kpi.kpi_values.dimensions) AS k ORDER BY k) "
        "= CAST(:breakdown AS text[])"
    ).bindparams(breakdown=sorted(set(by)))
    rows = conn.execute(
        sa.select(
            kpi_values.c.period_start,
            kpi_values.c.period_end,
            kpi_values.c.dimensions,
            kpi_values.c.value,
        )
        .where(
            kpi_values.c.kpi == kpi.name,
            kpi_values.c.grain == grain,
            kpi_values.c.period_start >= local_midnight_sql(first_day, tz),
            kpi_values.c.period_start < local_midnight_sql(last_day + dt.timedelta(days=1), tz),
            breakdown,
        )
        .order_by(kpi_values.c.period_start, sa.cast(kpi_values.c.dimensions, sa.Text()))
    ).all()
    zone = ZoneInfo(tz)
    return [
        KpiValue(
            row.period_start.astimezone(zone),
            row.period_end.astimezone(zone),
            dict(row.dimensions),
            row.value,
        )
        for row in rows
    ]
