"""Lookup dimensions: `lookup.column` of a reference source, joined to a KPI's fact rows.

A fact source declares `lookups: [{name: customer, source: customers, key: {customer_id:
customer_id}}]` (fact column -> reference key column); a KPI of it may then use the dimension
`customer.segment`. The reference's clean table holds one row per key (the newest version wins),
so the join never multiplies fact rows; a fact row whose key has no reference row gets NULL for
the dimension, a real value kept apart from the rolled-up total by GROUPING().

The catalog rules of lookups (which dimensions exist, keys that match) are in
lib/kpi/validation.py with the other KPI rules. Values are current-version: a customer who moves segment moves with all of their past orders
once the affected periods are refreshed (lib/clean/reference_changes records those periods).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from analytics_pipelines.lib.catalog.models import ColumnType
from analytics_pipelines.lib.kpi.plan import KpiPlan
from analytics_pipelines.lib.kpi.validation import split_dimension
from analytics_pipelines.lib.tables import clean_table


def dimension_type(plan: KpiPlan, name: str) -> ColumnType:
    """The column type of a dimension, whether of the source or of a reference."""
    assert plan.source is not None, "a derived KPI has no rows of its own"
    parts = split_dimension(name)
    if parts is None:
        return plan.source.column(name).type
    return plan.references[parts[0]].column(parts[1]).type


def joined_rows(
    plan: KpiPlan, clean: sa.Table
) -> tuple[sa.FromClause, Callable[[str], sa.ColumnElement[Any]]]:
    """The fact table LEFT JOINed with each reference the KPI reads, and a function giving the
    column of a name (a fact column, or `lookup.column` labelled with the dimension's name).

    The join is on the reference's whole primary key, so each fact row meets at most one row.
    """
    assert plan.source is not None, "a derived KPI has no rows of its own"
    joined: sa.FromClause = clean
    aliases: dict[str, sa.FromClause] = {}
    lookups = {lookup.name: lookup for lookup in plan.source.lookups}
    for name, reference in sorted(plan.references.items()):
        alias = clean_table(reference).alias(f"_lookup_{name}")
        on = [clean.c[fact] == alias.c[key] for fact, key in lookups[name].key.items()]
        joined = joined.outerjoin(alias, sa.and_(*on))
        aliases[name] = alias

    def column(name: str) -> sa.ColumnElement[Any]:
        parts = split_dimension(name)
        if parts is None:
            return clean.c[name]
        return aliases[parts[0]].c[parts[1]].label(name)

    return joined, column
