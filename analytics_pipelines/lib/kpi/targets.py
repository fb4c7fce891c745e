"""KPI targets: which cells a target applies to, its value per grain, and the status of a cell.

One rule, written once as SQL (psycopg2.sql) and used by the BI view `kpi.<name>`,
`analytics-pipelines kpi show` and the `on_target` asset check:

* a cell has a target when the KPI declares one for its grain (`by_grain`, else `value`) and
  the target applies to the cell: the total (`{}` dimensions) unless `applies_to: every_cell`;
* `higher`: on target when value >= target; `lower`: when value <= target. A value exactly on
  the target is on target. A NULL value, or a cell without target, has no status (NULL).
* The latest complete period of a grain is the one that ended last at or before `now`, with
  period boundaries in the KPI's time zone (a 23-hour spring day in Berlin ends at 22:00 UTC).

The target values and grain names enter the SQL as literals quoted by psycopg2.sql: the view's
DDL takes no parameters, and they are validated catalog values (decimals, grain names), never
data. Needs no SQLAlchemy (read by `kpi show`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from psycopg2 import sql

from analytics_pipelines.lib.catalog import KpiSpec
from analytics_pipelines.lib.catalog.models import Grain
from analytics_pipelines.lib.kpi.display import format_number, period_label
from analytics_pipelines.lib.pg import fetch_all

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

ON_TARGET = "on_target"
OFF_TARGET = "off_target"
NO_VALUE = "no_value"  # the check's word for a period without a value to compare yet

GrainStatus = Literal["on_target", "off_target", "no_value"]

_NULL_NUMERIC = sql.SQL("CAST(NULL AS numeric)")
_NULL_TEXT = sql.SQL("CAST(NULL AS text)")


def target_grains(kpi: KpiSpec) -> list[Grain]:
    """The KPI's grains that have a target, finest first."""
    target = kpi.target
    return [g for g in kpi.grains if target is not None and target.for_grain(g) is not None]


def applies_sql(kpi: KpiSpec, dimensions: sql.Composable) -> sql.Composable:
    """Whether a cell with these dimensions (a jsonb expression) is compared with the target."""
    if kpi.target is not None and kpi.target.applies_to == "every_cell":
        return sql.SQL("TRUE")
    return sql.SQL("({} = CAST('{{}}' AS jsonb))").format(dimensions)


def target_sql(kpi: KpiSpec, grain: sql.Composable, dimensions: sql.Composable) -> sql.Composable:
    """The target of a cell (NULL where it has none)."""
    grains = target_grains(kpi)
    if kpi.target is None or not grains:
        return _NULL_NUMERIC
    applies = applies_sql(kpi, dimensions)
    whens = [
        sql.SQL("WHEN {grain} = {name} AND {applies} THEN CAST({value} AS numeric)").format(
            grain=grain,
            name=sql.Literal(g),
            applies=applies,
            value=sql.Literal(str(kpi.target.for_grain(g))),
        )
        for g in grains
    ]
    return sql.SQL("CASE {} ELSE {} END").format(sql.SQL(" ").join(whens), _NULL_NUMERIC)


def status_sql(kpi: KpiSpec, value: sql.Composable, target: sql.Composable) -> sql.Composable:
    """'on_target' / 'off_target', NULL when the value or the target is NULL."""
    if kpi.target is None:
        return _NULL_TEXT
    good, bad = (">=", "<") if kpi.target.direction == "higher" else ("<=", ">")
    # Both comparisons are NULL for a NULL value or target, so the CASE gives NULL there.
    return sql.SQL(
        "CASE WHEN {value} {good} {target} THEN {on} WHEN {value} {bad} {target} THEN {off} "
        "ELSE {null} END"
    ).format(
        value=value,
        target=target,
        good=sql.SQL(good),
        bad=sql.SQL(bad),
        on=sql.Literal(ON_TARGET),
        off=sql.Literal(OFF_TARGET),
        null=_NULL_TEXT,
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
    fiscal_year_start_month: int = 1  # labels FY2026 Q1 (lib/kpi/display.py)

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
        return period_label(self.grain, self.period_start, self.fiscal_year_start_month)

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


_CELLS = (
    "SELECT dimensions, value, {status} AS status FROM {table} "
    "WHERE kpi = %(kpi)s AND grain = %(grain)s AND period_start = %(start)s AND {applies} "
    "ORDER BY CAST(dimensions AS text)"
)


def latest_complete_period(
    conn: Connection, kpi: KpiSpec, grain: Grain, now: dt.datetime
) -> GrainVerdict:
    """The stored cells of the period of `grain` that ended last at or before `now`."""
    # The check's path, not `kpi show`'s: SQLAlchemy (for the period rule) is imported here.
    from analytics_pipelines.lib.kpi.periods import Calendar
    from analytics_pipelines.lib.kpi.periods import latest_complete_period as period_bounds
    from analytics_pipelines.lib.warehouse import dbapi_connection

    target = kpi.target.for_grain(grain) if kpi.target is not None else None
    if target is None:
        raise ValueError(f"kpi {kpi.name} has no target per {grain}")
    bounds = period_bounds(conn, grain, kpi.timezone, now, Calendar.of(kpi))
    grain_column, dimensions = sql.Identifier("grain"), sql.Identifier("dimensions")
    statement = sql.SQL(_CELLS).format(
        status=status_sql(kpi, sql.Identifier("value"), target_sql(kpi, grain_column, dimensions)),
        table=sql.Identifier("kpi", "kpi_values"),
        applies=applies_sql(kpi, dimensions),
    )
    rows = fetch_all(
        dbapi_connection(conn), statement, {"kpi": kpi.name, "grain": grain, "start": bounds[0]}
    )
    zone = ZoneInfo(kpi.timezone)
    return GrainVerdict(
        grain=grain,
        period_start=bounds[0].astimezone(zone),
        period_end=bounds[1].astimezone(zone),
        target=target,
        cells=[
            TargetCell(dict(r.dimensions), r.value, r.status) for r in rows if r.status is not None
        ],
        fiscal_year_start_month=kpi.fiscal_year_start_month,
    )


def latest_complete_periods(conn: Connection, kpi: KpiSpec, now: dt.datetime) -> list[GrainVerdict]:
    """One verdict per grain with a target, finest first."""
    return [latest_complete_period(conn, kpi, grain, now) for grain in target_grains(kpi)]
