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

# Re-exported: the engine and the CLI read labels from here.
from analytics_pipelines.lib.kpi.display import period_label as period_label
from analytics_pipelines.lib.kpi.periods import local_midnight_sql
from analytics_pipelines.lib.kpi.targets import status_sql, target_sql
from analytics_pipelines.lib.tables import kpi_values


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
    target = target_sql(kpi, kpi_values.c.grain, kpi_values.c.dimensions)
    rows = conn.execute(
        sa.select(
            kpi_values.c.period_start,
            kpi_values.c.period_end,
            kpi_values.c.dimensions,
            kpi_values.c.value,
            target.label("target"),
            status_sql(kpi, kpi_values.c.value, target).label("target_status"),
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
            row.target,
            row.target_status,
        )
        for row in rows
    ]
