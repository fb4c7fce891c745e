"""The set-based SQL of a KPI refresh: a DELETE per grain and at most one INSERT ... SELECT per
grain (grains whose windows nearly coincide share one).

Each statement covers a whole window of local dates (a day, or a 365-day backfill alike), so the
cost of a refresh follows the periods it touches, not the history in the clean table: the event
time is compared with a sargable range `event_time >= start AND event_time < end`.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from analytics_pipelines.lib.catalog.models import Grain
from analytics_pipelines.lib.kpi.expression_sql import (
    compile_derived,
    compile_filter,
    compile_measure,
)
from analytics_pipelines.lib.kpi.lookups import dimension_type, joined_rows
from analytics_pipelines.lib.kpi.periods import (
    STANDARD,
    Calendar,
    local_midnight_sql,
    period_end_sql,
    period_start_sql,
    truncated_sql,
)
from analytics_pipelines.lib.kpi.plan import KpiPlan
from analytics_pipelines.lib.kpi.rollup import Rollup, bytewise_text_columns, can_roll_up
from analytics_pipelines.lib.tables import clean_table, kpi_values

# Helper columns start with "_": catalog names start with a letter, so they never clash.


def _empty_object() -> sa.ColumnElement[Any]:
    return sa.cast(sa.literal("{}", sa.Text()), JSONB)


def local_window(
    plan: KpiPlan, start: dt.date, end: dt.date
) -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]:
    tz = plan.kpi.timezone
    return local_midnight_sql(start, tz), local_midnight_sql(end, tz)


def delete_window(plan: KpiPlan, grain: Grain, start: dt.date, end: dt.date) -> sa.Delete:
    """Remove the stored values of the periods starting in the local dates [start, end)."""
    low, high = local_window(plan, start, end)
    return kpi_values.delete().where(
        kpi_values.c.kpi == plan.name,
        kpi_values.c.grain == grain,
        kpi_values.c.period_start >= low,
        kpi_values.c.period_start < high,
    )


def grouping_sets(
    period: sa.ColumnElement[Any], dimensions: Sequence[sa.ColumnElement[Any]]
) -> list[tuple[sa.ColumnElement[Any], ...]]:
    """Every subset of the dimensions (the empty one is the total), each with the period."""
    sets = []
    for size in range(len(dimensions), -1, -1):
        for subset in itertools.combinations(dimensions, size):
            sets.append((period, *subset))
    return sets


def dimensions_object(names: list[str], columns: Sequence[sa.ColumnElement[Any]]) -> Any:
    """JSON object of the dimensions grouped in this row: `{}` for the total.

    GROUPING() tells a rolled-up dimension apart from a real NULL value, which stays `null`.
    """
    if not names:
        return _empty_object()
    parts: list[sa.ColumnElement[Any]] = [
        sa.case(
            (
                sa.func.grouping(column) == 0,
                sa.func.jsonb_build_object(sa.cast(sa.literal(name), sa.Text()), column),
            ),
            else_=_empty_object(),
        )
        for name, column in zip(names, columns, strict=True)
    ]
    return functools.reduce(lambda left, right: left.op("||")(right), parts)


def numeric_value(plan: KpiPlan, expression: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    assert plan.measure is not None
    if plan.measure.value_type in ("date", "timestamp"):
        # min/max of a date or time: stored as seconds since 1970-01-01 in the numeric column.
        return sa.func.extract("epoch", expression)
    return sa.cast(expression, sa.Numeric())


Windows = dict[Grain, tuple[dt.date, dt.date]]

# Grains are computed by one statement (one scan of the clean rows) when their windows nearly
# coincide, e.g. the days, weeks and months of a long backfill; a one-day refresh keeps one
# statement per grain, so the hours of one day are not computed over the rows of a whole year.
SHARED_SCAN_SLACK = 2.0


def grain_groups(windows: Windows) -> list[list[Grain]]:
    """Split grains (finest first) into groups that share one scan of the clean rows."""
    groups: list[list[Grain]] = []
    finest_days = 0
    low = high = dt.date.min
    for grain, (start, end) in windows.items():
        if groups:
            union = (max(high, end) - min(low, start)).days
            if union <= SHARED_SCAN_SLACK * finest_days:
                groups[-1].append(grain)
                low, high = min(low, start), max(high, end)
                continue
        groups.append([grain])
        finest_days, low, high = (end - start).days, start, end
    return groups


def insert_measure(plan: KpiPlan, windows: Windows, roll_up: bool = True) -> sa.Insert:
    """Aggregate the clean rows into the periods of every grain of `windows`, in one statement.

    `windows` maps each grain to the local dates [start, end) whose periods it replaces. The
    rows of the union of the windows are read once; the local time of each row is computed once
    and truncated per grain; values of periods outside their grain's window are not written.
    With `roll_up` (and a measure that allows it) the rows are first aggregated per finest
    period and dimension combination; every grain and dimension subset is rolled up from those.
    """
    assert plan.measure is not None and plan.source is not None
    kpi, source = plan.kpi, plan.source
    tz = sa.literal(kpi.timezone, sa.Text())
    clean = clean_table(source)
    event = clean.c[source.event_column]
    first = min(start for start, _ in windows.values())
    last = max(end for _, end in windows.values())
    moment: sa.ColumnElement[Any]
    local: sa.ColumnElement[Any]
    if source.column(source.event_column).type == "date":
        # A date has no time of day: it stands for the local midnight in the KPI's zone.
        local = sa.cast(event, sa.DateTime(timezone=False))
        moment = sa.func.timezone(tz, local, type_=sa.DateTime(timezone=True))
        in_window = sa.and_(event >= first, event < last)
    else:
        moment = event
        local = sa.func.timezone(tz, event, type_=sa.DateTime(timezone=False))
        low, high = local_window(plan, first, last)
        in_window = sa.and_(event >= low, event < high)

    needed = sorted(
        set(kpi.dimensions) | plan.measure.columns | (plan.filter.columns if plan.filter else set())
    )
    # The filter is not a WHERE: it goes into each aggregate (FILTER (WHERE …)), so a period and
    # dimension combination with clean rows but none passing the filter gets 0, not no row.
    conditions = [in_window]
    extra = (
        [period_start_sql("hour", moment, kpi.timezone).label("_hour")] if "hour" in windows else []
    )
    # OFFSET 0 keeps PostgreSQL from inlining the subquery, which would repeat the (costly)
    # time zone conversion once per grain instead of once per row.
    joined, column_of = joined_rows(plan, clean)
    rows = (
        sa.select(local.label("_local"), *extra, *(column_of(name) for name in needed))
        .select_from(joined)
        .where(*conditions)
        .offset(0)
        .subquery("rows")
    )
    periods, value = (
        _rolled_up_periods(plan, windows, rows)
        if roll_up and can_roll_up(plan.measure)
        else _periods(plan, windows, rows, needed)
    )
    dimensions = [periods.c[name] for name in kpi.dimensions]
    sets = [
        sa.tuple_(*grouping)
        for grain in windows
        for grouping in grouping_sets(periods.c[f"_p_{grain}"], dimensions)
    ]

    def when(grain: Grain) -> sa.ColumnElement[bool]:
        return sa.func.grouping(periods.c[f"_p_{grain}"]) == 0

    def start_of(grain: Grain) -> sa.ColumnElement[Any]:
        column = periods.c[f"_p_{grain}"]
        if grain == "hour":
            return column
        return sa.func.timezone(tz, column, type_=sa.DateTime(timezone=True))

    def end_of(grain: Grain) -> sa.ColumnElement[Any]:
        if grain == "hour":
            return period_end_sql("hour", periods.c._p_hour, kpi.timezone)
        step = sa.cast(sa.literal(_STEPS[grain], sa.Text()), sa.Interval())
        return sa.func.timezone(
            tz, periods.c[f"_p_{grain}"] + step, type_=sa.DateTime(timezone=True)
        )

    grains = list(windows)
    grouped = (
        sa.select(
            sa.case(*((when(g), sa.literal(g, sa.Text())) for g in grains)).label("grain"),
            sa.case(*((when(g), start_of(g)) for g in grains)).label("period_start"),
            sa.case(*((when(g), end_of(g)) for g in grains)).label("period_end"),
            dimensions_object(list(kpi.dimensions), dimensions).label("dimensions"),
            numeric_value(plan, value).label("value"),
        )
        .group_by(sa.func.grouping_sets(*sets))
        .subquery("grouped")
    )
    in_own_window = []
    for grain, (start, end) in windows.items():
        low, high = local_window(plan, start, end)
        in_own_window.append(
            sa.and_(
                grouped.c.grain == grain,
                grouped.c.period_start >= low,
                grouped.c.period_start < high,
            )
        )
    select = sa.select(
        sa.literal(kpi.name, sa.Text()),
        grouped.c.grain,
        grouped.c.period_start,
        grouped.c.period_end,
        grouped.c.dimensions,
        grouped.c.value,
        sa.func.now(),
    ).where(sa.or_(*in_own_window))
    return kpi_values.insert().from_select(VALUE_COLUMNS, select)


def _truncated(
    grain: Grain, local: sa.ColumnElement[Any], calendar: Calendar = STANDARD
) -> sa.ColumnElement[Any]:
    return truncated_sql(grain, local, calendar)


def _measure_filter(plan: KpiPlan, cols: Any) -> sa.ColumnElement[bool] | None:
    return compile_filter(plan.filter, cols) if plan.filter is not None else None


def _periods(
    plan: KpiPlan, windows: Windows, rows: sa.Subquery, needed: list[str]
) -> tuple[sa.Subquery, sa.ColumnElement[Any]]:
    """Each clean row with its period in every grain; the measure over any group of them.

    Distinct counts sort every group's values, once per grain and dimension subset, and the
    grouping sets sort by dimension: text is compared bytewise there (COLLATE "C"), which is
    much faster than the database's locale and exact, because equality under a deterministic
    collation (every database default is one) is byte equality. Only distinct counts and
    grouping see the "C" collation; min/max of a text keep the database's order.
    """
    assert plan.measure is not None and plan.source is not None
    # Filter columns keep the database's collation: a filter may compare text with < or >.
    filtered = plan.filter.columns if plan.filter is not None else set()
    bytewise = bytewise_text_columns(
        plan.measure,
        {
            name
            for name in plan.kpi.dimensions
            if dimension_type(plan, name) == "string" and name not in filtered
        },
    )

    def column(name: str) -> sa.ColumnElement[Any]:
        return rows.c[name].collate("C").label(name) if name in bytewise else rows.c[name]

    periods = sa.select(
        *(
            (
                rows.c._hour
                if grain == "hour"
                else _truncated(grain, rows.c._local, Calendar.of(plan.kpi))
            ).label(f"_p_{grain}")
            for grain in windows
        ),
        *(column(name) for name in needed),
    ).subquery("periods")
    value = compile_measure(
        plan.measure,
        periods.c,
        where=_measure_filter(plan, periods.c),
        empty_sum=plan.kpi.fill_nulls_with,
    )
    return periods, value


def _rolled_up_periods(
    plan: KpiPlan, windows: Windows, rows: sa.Subquery
) -> tuple[sa.Subquery, sa.ColumnElement[Any]]:
    """Partial aggregates per finest period (hour, else day) and full dimension combination,
    with their period in every grain; the measure over any group of them.

    Grouping sets then sort and aggregate these few rows, not every clean row once per grain
    and dimension subset: a year of days x dimensions instead of a year of rows.
    """
    assert plan.measure is not None
    rollup = Rollup(plan.measure)
    by_hour = "hour" in windows
    fine_period = rows.c._hour if by_hour else _truncated("day", rows.c._local)
    dimensions = [rows.c[name] for name in plan.kpi.dimensions]
    fine = (
        sa.select(
            fine_period.label("_fine"),
            *dimensions,
            *rollup.partials(
                rows.c, where=_measure_filter(plan, rows.c), empty_sum=plan.kpi.fill_nulls_with
            ),
        )
        .group_by(fine_period, *dimensions)
        .subquery("fine")
    )
    local = (
        sa.func.timezone(
            sa.literal(plan.kpi.timezone, sa.Text()), fine.c._fine, type_=sa.DateTime()
        )
        if by_hour
        else fine.c._fine
    )
    partials = [c for c in fine.c if c.name not in ("_fine", *plan.kpi.dimensions)]
    periods = sa.select(
        *(
            (
                fine.c._fine if grain == "hour" else _truncated(grain, local, Calendar.of(plan.kpi))
            ).label(f"_p_{grain}")
            for grain in windows
        ),
        *(fine.c[name] for name in plan.kpi.dimensions),
        *partials,
    ).subquery("periods")
    return periods, rollup.value(periods.c)


_STEPS: dict[str, str] = {
    "day": "1 day",
    "week": "7 days",
    "month": "1 month",
    "quarter": "3 months",
    "year": "1 year",
}


def insert_derived(plan: KpiPlan, grain: Grain, start: dt.date, end: dt.date) -> sa.Insert:
    """Combine the stored values of the input KPIs, period by period and dimension by dimension."""
    assert plan.derived is not None
    low, high = local_window(plan, start, end)
    values = kpi_values.c
    labels = {ref: f"_in{index}" for index, ref in enumerate(plan.inputs)}
    dimensions = sa.cast(values.dimensions, JSONB)
    # Inputs may be broken down by more dimensions than this KPI (and come from other sources):
    # only their cells broken down by a subset of this KPI's dimensions line up with its cells.
    own_breakdowns = (
        dimensions.op("-")(sa.literal(list(plan.kpi.dimensions), ARRAY(sa.Text())))
        == _empty_object()
    )
    pivot = (
        sa.select(
            values.period_start,
            values.period_end,
            dimensions.label("dimensions"),
            *(
                sa.func.max(values.value).filter(values.kpi == ref).label(label)
                for ref, label in labels.items()
            ),
        )
        .where(
            values.kpi.in_(plan.inputs),
            values.grain == grain,
            values.period_start >= low,
            values.period_start < high,
            own_breakdowns,
        )
        .group_by(values.period_start, values.period_end, dimensions)
        .subquery("inputs")
    )
    value = compile_derived(plan.derived, {ref: pivot.c[label] for ref, label in labels.items()})
    select = sa.select(
        sa.literal(plan.name, sa.Text()),
        sa.literal(grain, sa.Text()),
        pivot.c.period_start,
        pivot.c.period_end,
        pivot.c.dimensions,
        sa.cast(value, sa.Numeric()),
        sa.func.now(),
    )
    return kpi_values.insert().from_select(VALUE_COLUMNS, select)


def insert_values(plan: KpiPlan, windows: Windows, roll_up: bool = True) -> list[sa.Insert]:
    """The INSERT statements that recompute `windows` (grain -> local dates [start, end))."""
    if plan.derived is not None:
        return [insert_derived(plan, grain, *window) for grain, window in windows.items()]
    if plan.kpi.window is not None:
        from analytics_pipelines.lib.kpi.windows import insert_window  # builds on this module

        return [insert_window(plan, windows)]
    if plan.kpi.semi_additive is not None:
        # Imported here: semi_additive builds on this module's helpers.
        from analytics_pipelines.lib.kpi.semi_additive import insert_semi_additive

        return [insert_semi_additive(plan, windows)]
    return [
        insert_measure(plan, {grain: windows[grain] for grain in group}, roll_up)
        for group in grain_groups(windows)
    ]


VALUE_COLUMNS = [
    "kpi",
    "grain",
    "period_start",
    "period_end",
    "dimensions",
    "value",
    "computed_at",
]

# Used by tests and the benchmark to recognise the statements of a refresh.
INSERT_MARKER = "INSERT INTO kpi.kpi_values"
