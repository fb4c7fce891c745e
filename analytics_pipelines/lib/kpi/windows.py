"""Window KPIs: the value at each local day aggregates the clean rows of a window of local days
ending there, the trailing N days (`window: {rolling: 28}`) or the month, quarter or year to
date (`window: {to_date: year}`, `all`: every day up to it).

One INSERT ... SELECT per refresh of the days [first, last]:

    clean rows of [window start of `first`, last] (a sargable range on the event time)
    -> each row's local date r
    -> rolled up (sum, count, avg, min, max): per (r, dimensions) partial aggregates, as for
       coarser periods (lib/kpi/rollup.py); count_distinct: the rows themselves
    -> expanded to the refreshed days whose window contains r (generate_series from r to the
       last such day, within [first, last])
    -> GROUP BY GROUPING SETS (day, every dimension subset): the measure over the window

A distinct count of a column to date is not expanded: each value counts from the first day it
appears in the period, so the value at a day is a running count (`_distinct_to_date`).
Quarters and years follow the KPI's fiscal calendar (lib/kpi/periods.py Calendar).

So a distinct count is a distinct count over the window's rows, never a sum of daily counts, and
an average is the window's sum over its count. Windows are in local days of the KPI's zone: a
23- or 25-hour day is one day of a rolling window. A day has a cell where its window has clean
rows (before the KPI's filter), like every KPI (a day without rows inside a window with rows has
the window's value). The cost is the window's rows (or days x dimensions) times the refreshed
days each of them reaches.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import array

from analytics_pipelines.lib.kpi.expression_ast import Aggregate, ColumnRef, Measure
from analytics_pipelines.lib.kpi.expression_sql import compile_filter, compile_measure
from analytics_pipelines.lib.kpi.lookups import dimension_type, joined_rows
from analytics_pipelines.lib.kpi.periods import Calendar, truncated_sql, window_first_day
from analytics_pipelines.lib.kpi.plan import KpiPlan
from analytics_pipelines.lib.kpi.rollup import Rollup, can_roll_up
from analytics_pipelines.lib.kpi.statements import (
    VALUE_COLUMNS,
    Windows,
    dimensions_object,
    grouping_sets,
    local_window,
    numeric_value,
)
from analytics_pipelines.lib.tables import clean_table, kpi_values

_ONE_DAY = sa.text("interval '1 day'")
_DUPLICATE_FREE = frozenset({"count_distinct", "min", "max"})


def _local_timestamp(day: dt.date) -> sa.ColumnElement[Any]:
    return sa.cast(sa.literal(day, sa.Date()), sa.DateTime(timezone=False))


def _last_day_reached(plan: KpiPlan, row_day: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """SQL for the last local day (a timestamp at midnight) whose window contains `row_day`."""
    window = plan.kpi.window
    assert window is not None
    if window.rolling is not None:
        return row_day + sa.cast(sa.literal(f"{window.rolling - 1} days", sa.Text()), sa.Interval())
    assert window.to_date is not None and window.to_date != "all"
    step = {"month": "1 month", "quarter": "3 months", "year": "1 year"}[window.to_date]
    start = truncated_sql(window.to_date, row_day, Calendar.of(plan.kpi))
    return start + sa.cast(sa.literal(step, sa.Text()), sa.Interval()) - _ONE_DAY


def insert_window(plan: KpiPlan, windows: Windows) -> sa.Insert:
    """The window values of the local days [start, end) of `windows["day"]`, in one INSERT."""
    kpi, source, window = plan.kpi, plan.source, plan.kpi.window
    assert plan.measure is not None and source is not None and window is not None
    first, end = windows["day"]
    last = end - dt.timedelta(days=1)
    read_from = window_first_day(window, first, Calendar.of(kpi))
    tz = sa.literal(kpi.timezone, sa.Text())
    clean = clean_table(source)
    event = clean.c[source.event_column]
    row_day: sa.ColumnElement[Any]
    if source.column(source.event_column).type == "date":
        # A date has no time of day: it is the local day itself.
        row_day = sa.cast(event, sa.DateTime(timezone=False))
        in_range = [event < end, *([event >= read_from] if read_from is not None else [])]
    else:
        row_day = sa.func.date_trunc(
            "day", sa.func.timezone(tz, event, type_=sa.DateTime()), type_=sa.DateTime()
        )
        low, high = local_window(plan, read_from or first, end)
        in_range = [event < high, *([event >= low] if read_from is not None else [])]

    joined, column_of = joined_rows(plan, clean)
    needed = sorted(
        set(kpi.dimensions) | plan.measure.columns | (plan.filter.columns if plan.filter else set())
    )
    rows = (
        sa.select(row_day.label("_row_day"), *(column_of(name) for name in needed))
        .select_from(joined)
        .where(*in_range)
        .subquery("rows")
    )
    first_ts, last_ts = _local_timestamp(first), _local_timestamp(last)
    if _counts_first_days(plan):
        select = _distinct_to_date(plan, rows, first_ts, last_ts)
    else:
        select = _expanded(plan, rows, first_ts, last_ts)
    return kpi_values.insert().from_select(VALUE_COLUMNS, select)


def _counts_first_days(plan: KpiPlan) -> bool:
    """A distinct count of a column to date: counted from first days, without expanding rows."""
    root = plan.measure.root if plan.measure is not None else None
    return (
        plan.kpi.window is not None
        and plan.kpi.window.to_date is not None
        and isinstance(root, Aggregate)
        and root.function == "count_distinct"
        and isinstance(root.argument, ColumnRef)
    )


def _to_date_period(plan: KpiPlan, day: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The to-date period (its first day) of a local day; one period for `all`."""
    window = plan.kpi.window
    assert window is not None and window.to_date is not None
    if window.to_date == "all":
        return sa.literal(dt.datetime(1970, 1, 1), sa.DateTime())
    return truncated_sql(window.to_date, day, Calendar.of(plan.kpi))


def _distinct_to_date(
    plan: KpiPlan, rows: sa.Subquery, first: sa.ColumnElement[Any], last: sa.ColumnElement[Any]
) -> sa.Select[Any]:
    """count_distinct(column) month/quarter/year/all to date, from the first day each value
    appears in the period (per dimension subset): the value at a day is the running sum of the
    values first seen on each day up to it. Cells run from the period's first row (before the
    filter) to its end; nothing is expanded per row, so a year to date costs one grouping of
    its rows by (period, dimensions, value) and a running sum over at most 366 days per cell,
    each held until the next day with new values.
    """
    kpi, measure = plan.kpi, plan.measure
    assert measure is not None and isinstance(measure.root, Aggregate)
    assert isinstance(measure.root.argument, ColumnRef)
    tz = sa.literal(kpi.timezone, sa.Text())
    period = _to_date_period(plan, rows.c._row_day)

    def grouped(name: str, type_: str) -> sa.ColumnElement[Any]:
        # Text grouped bytewise: exact (equality under a deterministic collation is byte
        # equality) and much faster to sort than the locale's order, as in statements.py.
        return rows.c[name].collate("C") if type_ == "string" else rows.c[name]

    dims = [grouped(name, dimension_type(plan, name)) for name in kpi.dimensions]
    counted = grouped(measure.root.argument.name, measure.root.argument.type)
    # The first day the value passes the KPI's filter and the aggregate's own `where`.
    first_passing = compile_measure(
        Measure(
            measure.text,
            Aggregate("min", ColumnRef("_row_day", "timestamp"), measure.root.condition),
            "timestamp",
        ),
        rows.c,
        where=compile_filter(plan.filter, rows.c) if plan.filter is not None else None,
    )
    firsts = (
        sa.select(
            period.label("_p"),
            dimensions_object(list(kpi.dimensions), dims).label("_dims"),
            counted.label("_x"),
            first_passing.label("_first"),
            sa.func.min(rows.c._row_day).label("_any"),
        )
        .group_by(
            sa.func.grouping_sets(*(sa.tuple_(*g, counted) for g in grouping_sets(period, dims)))
        )
        .subquery("firsts")
    )
    # Per cell and day: the values first seen that day (n), or 0 on the cell's first row (a
    # value whose rows all fail the filter has no first day but still makes the cell exist).
    # Two arrays unnested side by side give each value's two events.
    events = sa.select(
        firsts.c._p,
        firsts.c._dims,
        sa.func.unnest(array([firsts.c._any, firsts.c._first])).label("_day"),
        sa.func.unnest(
            array(
                [
                    sa.literal(0),
                    sa.case((firsts.c._x.is_not(None) & firsts.c._first.is_not(None), 1), else_=0),
                ]
            )
        ).label("_n"),
    ).subquery("events")
    daily = (
        sa.select(events.c._p, events.c._dims, events.c._day, sa.func.sum(events.c._n).label("_n"))
        .where(events.c._day.is_not(None))
        .group_by(events.c._p, events.c._dims, events.c._day)
        .subquery("daily")
    )
    # The running count changes only on days with new values: it holds until the next one.
    cell = (daily.c._p, daily.c._dims)
    steps = sa.select(
        daily.c._day,
        daily.c._dims,
        sa.func.sum(daily.c._n).over(partition_by=cell, order_by=daily.c._day).label("_value"),
        sa.func.lead(daily.c._day).over(partition_by=cell, order_by=daily.c._day).label("_next"),
    ).subquery("steps")
    window = kpi.window
    assert window is not None
    period_end = last if window.to_date == "all" else _last_day_reached(plan, steps.c._day)
    until = sa.func.least(sa.func.coalesce(steps.c._next - _ONE_DAY, period_end), last)
    days = (
        sa.func.generate_series(sa.func.greatest(steps.c._day, first), until, _ONE_DAY)
        .table_valued("_day")
        .render_derived(name="days")
        .lateral()
    )
    return sa.select(
        sa.literal(kpi.name, sa.Text()),
        sa.literal("day", sa.Text()),
        sa.func.timezone(tz, days.c._day, type_=sa.DateTime(timezone=True)),
        sa.func.timezone(tz, days.c._day + _ONE_DAY, type_=sa.DateTime(timezone=True)),
        steps.c._dims,
        sa.cast(steps.c._value, sa.Numeric()),
        sa.func.now(),
    ).select_from(steps.join(days, sa.true()))


def _expanded(
    plan: KpiPlan, rows: sa.Subquery, first: sa.ColumnElement[Any], last: sa.ColumnElement[Any]
) -> sa.Select[Any]:
    """Each row (or per-day partial) expanded to the refreshed days whose window contains it,
    then the measure per day and dimension subset."""
    kpi, window = plan.kpi, plan.kpi.window
    assert plan.measure is not None and window is not None
    tz = sa.literal(kpi.timezone, sa.Text())
    if can_roll_up(plan.measure):
        rollup = Rollup(plan.measure)
        where = compile_filter(plan.filter, rows.c) if plan.filter is not None else None
        dims = [rows.c[name] for name in kpi.dimensions]
        contributions = (
            sa.select(
                rows.c._row_day,
                *dims,
                *rollup.partials(rows.c, where=where, empty_sum=kpi.fill_nulls_with),
            )
            .group_by(rows.c._row_day, *dims)
            .subquery("per_day")
        )
    elif all(a.function in _DUPLICATE_FREE for a in plan.measure.aggregates):
        # A row repeated on its day changes no distinct count, min or max: expand each
        # distinct (day, dimensions, values) once, not every row.
        contributions = sa.select(rows).distinct().subquery("distinct_rows")
    else:
        contributions = rows
    reached = (
        last
        if window.to_date == "all"
        else sa.func.least(_last_day_reached(plan, contributions.c._row_day), last)
    )
    days = (
        sa.func.generate_series(
            sa.func.greatest(contributions.c._row_day, first), reached, _ONE_DAY
        )
        .table_valued("_day")
        .render_derived(name="days")
        .lateral()
    )
    carried = [c for c in contributions.c if c.name != "_row_day"]
    expanded = (
        sa.select(days.c._day, *carried).select_from(contributions.join(days, sa.true())).subquery()
    )
    if can_roll_up(plan.measure):
        value = Rollup(plan.measure).value(expanded.c)
    else:
        value = compile_measure(
            plan.measure,
            expanded.c,
            where=compile_filter(plan.filter, expanded.c) if plan.filter is not None else None,
            empty_sum=kpi.fill_nulls_with,
        )
    dimensions = [expanded.c[name] for name in kpi.dimensions]
    day = expanded.c._day
    return sa.select(
        sa.literal(kpi.name, sa.Text()),
        sa.literal("day", sa.Text()),
        sa.func.timezone(tz, day, type_=sa.DateTime(timezone=True)),
        sa.func.timezone(tz, day + _ONE_DAY, type_=sa.DateTime(timezone=True)),
        dimensions_object(list(kpi.dimensions), dimensions),
        numeric_value(plan, value),
        sa.func.now(),
    ).group_by(sa.func.grouping_sets(*(sa.tuple_(*g) for g in grouping_sets(day, dimensions))))
