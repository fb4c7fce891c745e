"""Lookup dimensions: `lookup.column` of a reference source, joined to a KPI's fact rows.

A fact source declares `lookups: [{name: customer, source: customers, key: {customer_id:
customer_id}}]` (fact column -> reference key column); a KPI of it may then use the dimension
`customer.segment`. The reference's clean table holds one row per key (the newest version wins),
so the join never multiplies fact rows; a fact row whose key has no reference row gets NULL for
the dimension, a real value kept apart from the rolled-up total by GROUPING().

Values are current-version: a customer who moves segment moves with all of their past orders
once the affected periods are refreshed (lib/clean/reference_changes records those periods).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from analytics_pipelines.lib.catalog.models import ColumnType, KpiSpec, SourceSpec
from analytics_pipelines.lib.kpi.plan import KpiPlan, did_you_mean
from analytics_pipelines.lib.kpi.views import dimension_column
from analytics_pipelines.lib.tables import clean_table


def split_dimension(name: str) -> tuple[str, str] | None:
    """`("customer", "segment")` for `customer.segment`; None for a column of the source."""
    lookup, dot, column = name.partition(".")
    return (lookup, column) if dot else None


def lookup_problems(source: SourceSpec, sources: Mapping[str, SourceSpec]) -> list[str]:
    """What is wrong with the lookups `source` declares, one message per problem."""
    problems = []
    for lookup in source.lookups:
        reference = sources.get(lookup.source)
        where = f"lookup {lookup.name}"
        if reference is None:
            problems.append(
                f"{where}: unknown source {lookup.source!r}"
                + did_you_mean(lookup.source, [s for s in sources if s != source.name])
            )
            continue
        if reference.kind != "reference":
            problems.append(
                f"{where}: source {reference.name} is not a reference (declare it with "
                "kind: reference: one row per key, no event time)"
            )
            continue
        if sorted(lookup.key.values()) != sorted(reference.primary_key):
            problems.append(
                f"{where}: key must map columns of {source.name} to the whole primary key of "
                f"{reference.name} ({', '.join(reference.primary_key)}), "
                f"not ({', '.join(lookup.key.values())})"
            )
            continue
        for fact_column, key_column in lookup.key.items():
            fact_type = source.column(fact_column).type
            key_type = reference.column(key_column).type
            if fact_type != key_type:
                problems.append(
                    f"{where}: key: {source.name}.{fact_column} is {fact_type} but "
                    f"{reference.name}.{key_column} is {key_type}; the types must match"
                )
    return problems


def dimension_problems(
    kpi: KpiSpec, source: SourceSpec, sources: Mapping[str, SourceSpec]
) -> list[str]:
    """Dimensions of `kpi` that name nothing its source offers, and view columns that clash."""
    problems = []
    lookups = {lookup.name: lookup for lookup in source.lookups}
    offered = [
        *source.column_types,
        *(
            f"{lookup.name}.{column.name}"
            for lookup in source.lookups
            if lookup.source in sources
            for column in sources[lookup.source].columns
        ),
    ]
    for dimension in kpi.dimensions:
        parts = split_dimension(dimension)
        if parts is None:
            if dimension not in source.column_types:
                problems.append(
                    f"{dimension!r} is not a column of source {source.name}"
                    + did_you_mean(dimension, offered)
                )
            continue
        lookup_name, column = parts
        lookup = lookups.get(lookup_name)
        if lookup is None:
            known = ", ".join(sorted(lookups)) or "none"
            problems.append(
                f"{dimension!r}: source {source.name} declares no lookup {lookup_name!r} "
                f"(lookups: {known}){did_you_mean(lookup_name, lookups)}"
            )
            continue
        reference = sources.get(lookup.source)
        if reference is None or reference.kind != "reference":
            continue  # reported with the source's lookups
        if column not in reference.column_types:
            problems.append(
                f"{dimension!r}: {column!r} is not a column of reference source {reference.name}"
                + did_you_mean(column, reference.column_types)
            )
    seen: dict[str, str] = {}
    for dimension in kpi.dimensions:
        view_column = dimension_column(dimension)
        if view_column in seen:
            problems.append(
                f"{seen[view_column]!r} and {dimension!r} would both be column {view_column!r} "
                f"of the view kpi.{kpi.name}"
            )
        seen.setdefault(view_column, dimension)
    return problems


def references_of(
    kpi: KpiSpec, source: SourceSpec, sources: Mapping[str, SourceSpec]
) -> dict[str, SourceSpec]:
    """The reference sources the KPI's dimensions read, by lookup name (a valid catalog)."""
    lookups = {lookup.name: lookup for lookup in source.lookups}
    found = {}
    for dimension in kpi.dimensions:
        parts = split_dimension(dimension)
        if parts is not None:
            found[parts[0]] = sources[lookups[parts[0]].source]
    return found


def dimension_type(plan: KpiPlan, name: str) -> ColumnType:
    """The column type of a dimension, whether of the source or of a reference."""
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
