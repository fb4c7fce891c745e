"""Semi-additive KPIs (a stock level): per entity, the last (or first) row of each period, then the
measure across the entities of every dimension combination.

The last row of a week is not the last row of each of its days, so no grain is rolled up from a
finer one: each grain gets one statement over the clean rows of its own window,

    rows of the window -> DISTINCT ON (period, entity) ORDER BY period, entity, passes the
    filter DESC, event time DESC, primary key DESC -> GROUP BY GROUPING SETS over the dimensions

(`first` sorts the event time and primary key ascending). Ties at one event time go to the
greatest (`first`: smallest) primary key, text compared bytewise, so the pick never depends on
the database's locale. The KPI's filter applies before the pick: the picked row of an entity is
its last row that passes, and an entity with rows but none passing still makes its cell exist,
with the aggregate over no row (a sum of `fill_nulls_with`), as for every KPI. Nothing is
carried forward: an entity without a row in a period has no value there.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on

from analytics_pipelines.lib.catalog.models import Grain
from analytics_pipelines.lib.kpi.expression_sql import compile_filter, compile_measure
from analytics_pipelines.lib.kpi.periods import period_end_sql, period_start_sql
from analytics_pipelines.lib.kpi.plan import KpiPlan, entity_columns
from analytics_pipelines.lib.kpi.statements import (
    _COLUMNS,
    _dimensions_object,
    _grouping_sets,
    _numeric_value,
    _window,
)
from analytics_pipelines.lib.tables import clean_table, kpi_values


def insert_semi_additive(plan: KpiPlan, grain: Grain, start: dt.date, end: dt.date) -> sa.Insert:
    """The values of the `grain` periods starting in the local dates [start, end)."""
    kpi, source, semi_additive = plan.kpi, plan.source, plan.kpi.semi_additive
    assert plan.measure is not None and semi_additive is not None
    clean = clean_table(source)
    event = clean.c[source.event_time]
    moment: sa.ColumnElement[Any]
    if source.column(source.event_time).type == "date":
        # A date has no time of day: it stands for the local midnight in the KPI's zone.
        in_window = sa.and_(event >= start, event < end)
        local = sa.cast(event, sa.DateTime(timezone=False))
        moment = sa.func.timezone(
            sa.literal(kpi.timezone, sa.Text()), local, type_=sa.DateTime(timezone=True)
        )
    else:
        low, high = _window(plan, start, end)
        in_window = sa.and_(event >= low, event < high)
        moment = event

    per = entity_columns(kpi, source)
    keys = list(source.primary_key)
    carried = sorted(plan.measure.columns - set(per))

    def bytewise(name: str) -> sa.ColumnElement[Any]:
        # Equality and order of text by bytes: locale-independent, and faster to sort.
        column = clean.c[name]
        return column.collate("C") if source.column(name).type == "string" else column

    passes = (
        sa.func.coalesce(compile_filter(plan.filter, clean.c), sa.false())
        if plan.filter is not None
        else sa.true()
    ).label("_passes")
    # Rows that pass the filter come first, so an entity's pick is its last row that passes.
    passing_first = [passes.desc()] if plan.filter is not None else []
    period = period_start_sql(grain, moment, kpi.timezone).label("_period")
    entity = [bytewise(name).label(name) for name in per]
    descending = semi_additive.take == "last"

    def along(element: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return element.desc() if descending else element.asc()

    picked = (
        sa.select(period, *entity, *(clean.c[n] for n in carried), passes)
        .ext(distinct_on(period, *entity))
        .where(in_window)
        .order_by(
            period,
            *entity,
            *passing_first,
            along(event),
            *(along(bytewise(name)) for name in keys),
        )
        .subquery("picked")
    )

    dimensions = [picked.c[name] for name in kpi.dimensions]
    value = compile_measure(
        plan.measure, picked.c, where=picked.c._passes, empty_sum=kpi.fill_nulls_with
    )
    select = sa.select(
        sa.literal(kpi.name, sa.Text()),
        sa.literal(grain, sa.Text()),
        picked.c._period,
        period_end_sql(grain, picked.c._period, kpi.timezone),
        _dimensions_object(list(kpi.dimensions), dimensions),
        _numeric_value(plan, value),
        sa.func.now(),
    ).group_by(
        sa.func.grouping_sets(
            *(sa.tuple_(*grouping) for grouping in _grouping_sets(picked.c._period, dimensions))
        )
    )
    return kpi_values.insert().from_select(_COLUMNS, select)
