"""KPI targets: which cells a target applies to, its value per grain, and the status of a cell.

One rule, used by the BI view `kpi.<name>` (compiled with literal values, the view's DDL takes no
parameters), `analytics-pipelines kpi show` and the `on_target` asset check (bound values):

* a cell has a target when the KPI declares one for its grain (`by_grain`, else `value`) and
  the target applies to the cell: the total (`{}` dimensions) unless `applies_to: every_cell`;
* `higher`: on target when value >= target; `lower`: when value <= target. A value exactly on
  the target is on target. A NULL value, or a cell without target, has no status (NULL).
* The latest complete period of a grain is the one that ended last at or before `now`, with
  period boundaries in the KPI's time zone (a 23-hour spring day in Berlin ends at 22:00 UTC).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog import KpiSpec
from analytics_pipelines.lib.catalog.models import Grain
from analytics_pipelines.lib.kpi.display import format_number, period_label
from analytics_pipelines.lib.kpi.periods import period_start_sql
from analytics_pipelines.lib.tables import kpi_values

ON_TARGET = "on_target"
OFF_TARGET = "off_target"
NO_VALUE = "no_value"  # the check's word for a period without a value to compare yet

GrainStatus = Literal["on_target", "off_target", "no_value"]


def target_grains(kpi: KpiSpec) -> list[Grain]:
    """The KPI's grains that have a target, finest first."""
    target = kpi.target
    return [g for g in kpi.grains if target is not None and target.for_grain(g) is not None]


def applies_sql(kpi: KpiSpec, dimensions: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """Whether a cell with these dimensions is compared with the target at all."""
    if kpi.target is not None and kpi.target.applies_to == "every_cell":
        return sa.true()
    total = sa.cast(sa.literal("{}", sa.Text()), JSONB)
    return sa.type_coerce(dimensions, JSONB) == total


def target_sql(
    kpi: KpiSpec, grain: sa.ColumnElement[Any], dimensions: sa.ColumnElement[Any]
) -> sa.ColumnElement[Decimal | None]:
    """The target of a cell (NULL where it has none)."""
    grains = target_grains(kpi)
    if kpi.target is None or not grains:
        return sa.cast(sa.null(), sa.Numeric())
    applies = applies_sql(kpi, dimensions)
    return sa.case(
        *(
            (sa.and_(grain == g, applies), sa.literal(kpi.target.for_grain(g), sa.Numeric()))
            for g in grains
        ),
        else_=sa.cast(sa.null(), sa.Numeric()),
    )


def status_sql(
    kpi: KpiSpec, value: sa.ColumnElement[Any], target: sa.ColumnElement[Any]
) -> sa.ColumnElement[str | None]:
    """'on_target' / 'off_target', NULL when the value or the target is NULL."""
    if kpi.target is None:
        return sa.cast(sa.null(), sa.Text())
    if kpi.target.direction == "higher":
        good, bad = value >= target, value < target
    else:
        good, bad = value <= target, value > target
    # Both comparisons are NULL for a NULL value or target, so the CASE gives NULL there.
    return sa.case(
        (good, sa.literal(ON_TARGET, sa.Text())),
        (bad, sa.literal(OFF_TARGET, sa.Text())),
        else_=sa.cast(sa.null(), sa.Text()),
    )


@dataclass(frozen=True)
class TargetCell:
    dimensions: dict[str, Any]
    value: Decimal
    status: str  # on_target | off_target


@dataclass(frozen=True)
class GrainVerdict:
    """The latest complete period of one grain compared with its target."""

    grain: Grain
    period_start: dt.datetime  # in the KPI's time zone
    period_end: dt.datetime
    target: Decimal
    cells: list[TargetCell]  # the cells with a value the target applies to

    @property
    def off_target(self) -> list[TargetCell]:
        return [c for c in self.cells if c.status == OFF_TARGET]

    @property
    def status(self) -> GrainStatus:
        if not self.cells:
            return "no_value"
        return "off_target" if self.off_target else "on_target"

    @property
    def period(self) -> str:
        return period_label(self.grain, self.period_start)

    @property
    def total(self) -> Decimal | None:
        return next((c.value for c in self.cells if not c.dimensions), None)

    def describe(self, kpi: KpiSpec) -> str:
        """One sentence, e.g. `month 2026-10: 27000 off target (>= 30000)`."""
        sign = ">=" if kpi.target is not None and kpi.target.direction == "higher" else "<="
        wanted = f"{sign} {format_number(self.target)}"
        head = f"{self.grain} {self.period}"
        if not self.cells:
            return f"{head}: no value yet to compare with the target ({wanted})"
        if len(self.cells) == 1 and not self.cells[0].dimensions:
            words = self.status.replace("_", " ")
            return f"{head}: {format_number(self.cells[0].value)} {words} ({wanted})"
        off = self.off_target
        shown = ", ".join(f"{_cell_name(c)} {format_number(c.value)}" for c in off[:5])
        more = f" and {len(off) - 5} more" if len(off) > 5 else ""
        if not off:
            return f"{head}: all {len(self.cells)} cells on target ({wanted})"
        return f"{head}: {len(off)} of {len(self.cells)} cells off target ({wanted}): {shown}{more}"


def _cell_name(cell: TargetCell) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(cell.dimensions.items())) or "total"


def latest_complete_period(
    conn: Connection, kpi: KpiSpec, grain: Grain, now: dt.datetime
) -> GrainVerdict:
    """The stored cells of the period of `grain` that ended last at or before `now`."""
    target = kpi.target.for_grain(grain) if kpi.target is not None else None
    if target is None:
        raise ValueError(f"kpi {kpi.name} has no target per {grain}")
    tz = kpi.timezone
    # The running period starts at `current`; the one before ends there (DST by PostgreSQL).
    current = period_start_sql(grain, sa.literal(now, sa.DateTime(timezone=True)), tz)
    previous = period_start_sql(
        grain, current - sa.literal(dt.timedelta(microseconds=1), sa.Interval()), tz
    )
    bounds = sa.select(previous.label("period_start"), current.label("period_end")).subquery()
    cell_target = target_sql(kpi, kpi_values.c.grain, kpi_values.c.dimensions)
    rows = conn.execute(
        sa.select(
            bounds.c.period_start,
            bounds.c.period_end,
            kpi_values.c.dimensions,
            kpi_values.c.value,
            status_sql(kpi, kpi_values.c.value, cell_target).label("status"),
        )
        .select_from(
            bounds.outerjoin(
                kpi_values,
                sa.and_(
                    kpi_values.c.kpi == kpi.name,
                    kpi_values.c.grain == grain,
                    kpi_values.c.period_start == bounds.c.period_start,
                    applies_sql(kpi, kpi_values.c.dimensions),
                ),
            )
        )
        .order_by(sa.cast(kpi_values.c.dimensions, sa.Text()))
    ).all()
    zone = ZoneInfo(tz)
    return GrainVerdict(
        grain=grain,
        period_start=rows[0].period_start.astimezone(zone),
        period_end=rows[0].period_end.astimezone(zone),
        target=target,
        cells=[
            TargetCell(dict(r.dimensions), r.value, r.status) for r in rows if r.status is not None
        ],
    )


def latest_complete_periods(conn: Connection, kpi: KpiSpec, now: dt.datetime) -> list[GrainVerdict]:
    """One verdict per grain with a target, finest first."""
    return [latest_complete_period(conn, kpi, grain, now) for grain in target_grains(kpi)]
