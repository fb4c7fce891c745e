"""Refresh KPI values for a range of local dates, idempotently, inside PostgreSQL.

A refresh of the days [first, last] replaces, in one transaction, the values of every declared
grain whose periods contain one of those days: the hours and days themselves, and the whole
weeks, months, quarters and years around them, recomputed from the clean rows of the complete
period (exact for distinct counts and averages). One DELETE per grain and at most one
INSERT ... SELECT per grain, whatever the number of days.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog import SourceSpec
from analytics_pipelines.lib.catalog.models import Grain
from analytics_pipelines.lib.kpi.periods import Calendar, covering_window, local_midnight_sql
from analytics_pipelines.lib.kpi.plan import KpiPlan
from analytics_pipelines.lib.kpi.query import period_label
from analytics_pipelines.lib.kpi.statements import delete_window, insert_values
from analytics_pipelines.lib.kpi.views import ensure_view
from analytics_pipelines.lib.logging import get_logger
from analytics_pipelines.lib.tables import CLEAN_SCHEMA, clean_table, kpi_values
from analytics_pipelines.lib.warehouse import Warehouse

log = get_logger(__name__)

PREVIEW_ROWS = 10
WORK_MEM = "256MB"  # per refresh transaction (SET LOCAL); aggregation memory, not a cache


@dataclass(frozen=True)
class GrainRefresh:
    grain: Grain
    window_start: dt.date  # local dates [start, end) whose periods were replaced
    window_end: dt.date
    rows: int


@dataclass(frozen=True)
class RefreshResult:
    kpi: str
    first_day: dt.date
    last_day: dt.date
    grains: list[GrainRefresh] = field(default_factory=list)
    preview: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None  # why nothing was computed (e.g. no clean table yet)

    @property
    def rows_by_grain(self) -> dict[str, int]:
        return {g.grain: g.rows for g in self.grains}

    @property
    def rows(self) -> int:
        return sum(g.rows for g in self.grains)


def _qualified(schema: str, name: str) -> str:
    """A quoted relation name as a *value* for to_regclass (never spliced into SQL)."""
    return '"{}"."{}"'.format(schema, name.replace('"', '""'))


def clean_table_exists(conn: Connection, source: SourceSpec) -> bool:
    return (
        conn.execute(
            sa.text("SELECT to_regclass(:name) IS NOT NULL"),
            {"name": _qualified(CLEAN_SCHEMA, source.name)},
        ).scalar()
        is True
    )


def event_time_index_name(source: SourceSpec) -> str:
    name = f"ix_kpi_{source.name}_{source.event_column}"
    if len(name) > 63:  # PostgreSQL truncates identifiers; keep names distinct when it would
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:54]}_{digest}"
    return name


def ensure_event_time_index(warehouse: Warehouse, source: SourceSpec) -> bool:
    """Index `clean.<source>(<event_time>)` unless an index already leads with that column.

    Returns True when an index was created. Checked first so that a refresh does not take the
    table's SHARE lock (which CREATE INDEX IF NOT EXISTS takes even when the index exists).
    """
    table = clean_table(source)
    with warehouse.begin() as conn:
        if not clean_table_exists(conn, source):
            return False
        indexed = conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                "WHERE i.indrelid = to_regclass(:table) AND a.attname = :column)"
            ),
            {"table": _qualified(CLEAN_SCHEMA, source.name), "column": source.event_column},
        ).scalar()
        if indexed:
            return False
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
            {"key": f"kpi-index:{source.name}"},
        )
        sa.Index(event_time_index_name(source), table.c[source.event_column]).create(
            conn, checkfirst=True
        )
        log.info("created event-time index", source=source.name, column=source.event_column)
        return True


def _preview(
    conn: Connection, plan: KpiPlan, grain: Grain, first: dt.date, last: dt.date
) -> list[dict[str, Any]]:
    tz = plan.kpi.timezone
    rows = conn.execute(
        sa.select(kpi_values.c.period_start, kpi_values.c.dimensions, kpi_values.c.value)
        .where(
            kpi_values.c.kpi == plan.name,
            kpi_values.c.grain == grain,
            kpi_values.c.period_start >= local_midnight_sql(first, tz),
            kpi_values.c.period_start < local_midnight_sql(last + dt.timedelta(days=1), tz),
        )
        .order_by(kpi_values.c.period_start, sa.cast(kpi_values.c.dimensions, sa.Text()))
        .limit(PREVIEW_ROWS)
    ).all()
    zone = ZoneInfo(tz)
    # The period as people in the KPI's zone name it (a Berlin day is 2026-01-05, not
    # 2026-01-04T23:00:00+00:00); period_start stays the stored instant.
    return [
        {
            "period": period_label(
                grain, row.period_start.astimezone(zone), plan.kpi.fiscal_year_start_month
            ),
            "period_start": row.period_start,
            "dimensions": row.dimensions,
            "value": row.value,
        }
        for row in rows
    ]


def _rows_in_windows(
    conn: Connection, plan: KpiPlan, windows: dict[Grain, tuple[dt.date, dt.date]]
) -> dict[str, int]:
    """Values now stored in the refreshed windows (all written by this transaction)."""
    tz = plan.kpi.timezone
    in_windows = [
        sa.and_(
            kpi_values.c.grain == grain,
            kpi_values.c.period_start >= local_midnight_sql(start, tz),
            kpi_values.c.period_start < local_midnight_sql(end, tz),
        )
        for grain, (start, end) in windows.items()
    ]
    rows = conn.execute(
        sa.select(kpi_values.c.grain, sa.func.count())
        .where(kpi_values.c.kpi == plan.name, sa.or_(*in_windows))
        .group_by(kpi_values.c.grain)
    ).all()
    return {grain: int(count) for grain, count in rows}


def refresh_kpi(
    warehouse: Warehouse, plan: KpiPlan, first_day: dt.date, last_day: dt.date
) -> RefreshResult:
    """Recompute the KPI for the local dates [first_day, last_day] and every coarser period
    containing them; everything is replaced in one transaction."""
    if last_day < first_day:
        raise ValueError(f"empty date range {first_day}..{last_day}")
    kpi, source = plan.kpi, plan.source
    if source is not None:
        ensure_event_time_index(warehouse, source)
    with warehouse.begin() as conn:
        ensure_view(conn, kpi)
    grains: list[GrainRefresh] = []
    with warehouse.begin() as conn:
        if source is not None and not clean_table_exists(conn, source):
            reason = f"clean.{source.name} does not exist yet: no data loaded for this source"
            log.warning("kpi refresh skipped", kpi=kpi.name, reason=reason)
            return RefreshResult(kpi.name, first_day, last_day, skipped=reason)
        unloaded = [r.name for r in plan.references.values() if not clean_table_exists(conn, r)]
        if plan.measure is not None and unloaded:
            reason = (
                f"reference clean.{', clean.'.join(unloaded)} does not exist yet: no data loaded "
                "for it (its first load refreshes the periods of the rows that look it up)"
            )
            log.warning("kpi refresh skipped", kpi=kpi.name, reason=reason)
            return RefreshResult(kpi.name, first_day, last_day, skipped=reason)
        # Runs of the same KPI (schedule, sensor, backfill) take turns instead of colliding.
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"kpi:{kpi.name}"}
        )
        # Hour x dimension aggregates of a backfill outgrow the 4 MB default and spill to disk.
        conn.execute(
            sa.text("SELECT set_config('work_mem', :work_mem, true)"), {"work_mem": WORK_MEM}
        )
        if kpi.window is not None:
            # The planner guesses 1000 rows per generate_series call (the days a row reaches),
            # which lifts the plan's cost past jit_above_cost: compiling it would then take
            # longer (≈ 0.3 s) than the refresh of a day or of a year of days itself.
            conn.execute(sa.text("SELECT set_config('jit', 'off', true)"))
        calendar = Calendar.of(kpi)
        windows = {g: covering_window(g, first_day, last_day, calendar) for g in kpi.grains}
        for grain, (start, end) in windows.items():
            conn.execute(delete_window(plan, grain, start, end))
        for statement in insert_values(plan, windows):
            conn.execute(statement)
        written = _rows_in_windows(conn, plan, windows)
        grains = [GrainRefresh(g, s, e, written.get(g, 0)) for g, (s, e) in windows.items()]
        preview = _preview(conn, plan, kpi.grains[0], first_day, last_day)
    result = RefreshResult(kpi.name, first_day, last_day, grains, preview)
    log.info(
        "kpi refreshed",
        kpi=kpi.name,
        first_day=str(first_day),
        last_day=str(last_day),
        rows=result.rows_by_grain,
    )
    return result
