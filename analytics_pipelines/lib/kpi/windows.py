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

from analytics_pipelines.lib.kpi.expression_sql import compile_filter, compile_measure
from analytics_pipelines.lib.kpi.lookups import joined_rows
from analytics_pipelines.lib.kpi.periods import window_first_day
from analytics_pipelines.lib.kpi.plan import KpiPlan
from analytics_pipelines.lib.kpi.rollup import Rollup, can_roll_up
from analytics_pipelines.lib.kpi.statements import (
    _COLUMNS,
    Windows,
    _dimensions_object,
    _grouping_sets,
    _numeric_value,
    _window,
)
from analytics_pipelines.lib.tables import clean_table, kpi_values

_ONE_DAY = sa.text("interval '1 day'")


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
    start = sa.func.date_trunc(sa.literal(window.to_date, sa.Text()), row_day, type_=sa.DateTime())
    return start + sa.cast(sa.literal(step, sa.Text()), sa.Interval()) - _ONE_DAY


def insert_window(plan: KpiPlan, windows: Windows) -> sa.Insert:
    """The window values of the local days [start, end) of `windows["day"]`, in one INSERT."""
    kpi, source, window = plan.kpi, plan.source, plan.kpi.window
    assert plan.measure is not None and source is not None and window is not None
    first, end = windows["day"]
    last = end - dt.timedelta(days=1)
    read_from = window_first_day(window, first)
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
        low, high = _window(plan, read_from or first, end)
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
    else:
        contributions = rows
    reached = (
        _local_timestamp(last)
        if window.to_date == "all"
        else sa.func.least(
            _last_day_reached(plan, contributions.c._row_day), _local_timestamp(last)
        )
    )
    days = (
        sa.func.generate_series(
            sa.func.greatest(contributions.c._row_day, _local_timestamp(first)), reached, _ONE_DAY
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
    select = sa.select(
        sa.literal(kpi.name, sa.Text()),
        sa.literal("day", sa.Text()),
        sa.func.timezone(tz, day, type_=sa.DateTime(timezone=True)),
        sa.func.timezone(tz, day + _ONE_DAY, type_=sa.DateTime(timezone=True)),
        _dimensions_object(list(kpi.dimensions), dimensions),
        _numeric_value(plan, value),
        sa.func.now(),
    ).group_by(sa.func.grouping_sets(*(sa.tuple_(*g) for g in _grouping_sets(day, dimensions))))
    return kpi_values.insert().from_select(_COLUMNS, select)
