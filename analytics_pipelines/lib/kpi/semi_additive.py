"""Semi-additive KPIs (a stock level): per entity, the last (or first) row of each period, then the
measure across the entities of every dimension combination.

Values do not add up over time (a week's stock is not the sum of its days'), but the pick does:
the last row of an entity in a week is the last of its last rows of the days of that week. So one
statement writes every grain of a refresh, reading and sorting the clean rows once:

    rows of the union of the windows -> per finest period (hour, else day) and entity, the row
    first in the order (passes the filter DESC, event time DESC, primary key DESC)
    -> per coarser period and entity, the first of those in the same order
    -> per grain, GROUP BY GROUPING SETS over the dimensions

(`first` sorts the event time and primary key ascending). Ties at one event time go to the
greatest (`first`: smallest) primary key, text compared bytewise, so the pick never depends on
the database's locale. The KPI's filter applies before the pick: the picked row of an entity is
its last row that passes, and an entity with rows but none passing still makes its cell exist,
with the aggregate over no row (a sum of `fill_nulls_with`), as for every KPI. Nothing is
carried forward: an entity without a row in a period has no value there.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on

from analytics_pipelines.lib.catalog.models import Grain
from analytics_pipelines.lib.kpi.expression_sql import compile_filter, compile_measure
from analytics_pipelines.lib.kpi.periods import Calendar, period_end_sql, period_start_sql
from analytics_pipelines.lib.kpi.plan import KpiPlan, entity_columns
from analytics_pipelines.lib.kpi.statements import (
    VALUE_COLUMNS,
    Windows,
    dimensions_object,
    grouping_sets,
    local_window,
    numeric_value,
)
from analytics_pipelines.lib.tables import clean_table, kpi_values


def insert_semi_additive(plan: KpiPlan, windows: Windows) -> sa.Insert:
    """The values of every grain of `windows` (grain -> local dates [start, end)), in one INSERT."""
    kpi, source, semi_additive = plan.kpi, plan.source, plan.kpi.semi_additive
    assert plan.measure is not None and semi_additive is not None and source is not None
    clean = clean_table(source)
    event = clean.c[source.event_column]
    first = min(start for start, _ in windows.values())
    last = max(end for _, end in windows.values())
    moment: sa.ColumnElement[Any]
    if source.column(source.event_column).type == "date":
        # A date has no time of day: it stands for the local midnight in the KPI's zone.
        in_window = sa.and_(event >= first, event < last)
        local = sa.cast(event, sa.DateTime(timezone=False))
        moment = sa.func.timezone(
            sa.literal(kpi.timezone, sa.Text()), local, type_=sa.DateTime(timezone=True)
        )
    else:
        low, high = local_window(plan, first, last)
        in_window = sa.and_(event >= low, event < high)
        moment = event

    per = entity_columns(kpi, source)
    carried = sorted(plan.measure.columns - set(per))

    def bytewise(column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[Any]:
        # Equality and order of text by bytes: locale-independent, and faster to sort.
        return column.collate("C") if source.column(name).type == "string" else column

    passes = (
        sa.func.coalesce(compile_filter(plan.filter, clean.c), sa.false())
        if plan.filter is not None
        else sa.true()
    )
    descending = semi_additive.take == "last"

    def along(element: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return element.desc() if descending else element.asc()

    def picked(period: sa.ColumnElement[Any], cols: Any) -> sa.Select[Any]:
        """Per period and entity, the row first in the pick order, with what orders it."""
        entity = [cols[n] for n in per]
        keys = [cols[f"_k{i}"] for i in range(len(source.primary_key))]
        return (
            sa.select(
                period.label("_period"),
                *entity,
                *(cols[n] for n in carried),
                cols._passes,
                cols._event,
                *keys,
            )
            .ext(distinct_on(period, *entity))
            .order_by(
                period,
                *entity,
                *([cols._passes.desc()] if plan.filter is not None else []),
                along(cols._event),
                *(along(key) for key in keys),
            )
        )

    finest: Grain = "hour" if "hour" in windows else "day"
    rows = (
        sa.select(
            period_start_sql(finest, moment, kpi.timezone).label("_fine"),
            *(bytewise(clean.c[n], n).label(n) for n in per),
            *(clean.c[n] for n in carried),
            passes.label("_passes"),
            event.label("_event"),
            *(bytewise(clean.c[n], n).label(f"_k{i}") for i, n in enumerate(source.primary_key)),
        )
        .where(in_window)
        .subquery("rows")
    )
    # Computed once and read by every grain (a CTE used more than once is materialised).
    fine = picked(rows.c._fine, rows.c).cte("fine")

    grouped = []
    for grain, (start, end) in windows.items():
        picks = (
            fine
            if grain == finest
            else picked(
                period_start_sql(grain, fine.c._period, kpi.timezone, Calendar.of(kpi)), fine.c
            ).subquery()
        )
        low, high = local_window(plan, start, end)
        dimensions = [picks.c[name] for name in kpi.dimensions]
        value = compile_measure(
            plan.measure,
            picks.c,
            where=picks.c._passes if plan.filter is not None else None,
            empty_sum=kpi.fill_nulls_with,
        )
        grouped.append(
            sa.select(
                sa.literal(kpi.name, sa.Text()),
                sa.literal(grain, sa.Text()),
                picks.c._period,
                period_end_sql(grain, picks.c._period, kpi.timezone),
                dimensions_object(list(kpi.dimensions), dimensions),
                numeric_value(plan, value),
                sa.func.now(),
            )
            .where(picks.c._period >= low, picks.c._period < high)
            .group_by(
                sa.func.grouping_sets(
                    *(sa.tuple_(*g) for g in grouping_sets(picks.c._period, dimensions))
                )
            )
        )
    return kpi_values.insert().from_select(VALUE_COLUMNS, sa.union_all(*grouped))
