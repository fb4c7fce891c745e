"""Measures whose coarser periods can be rolled up, exactly, from partial aggregates.

A measure qualifies when each of its aggregates is sum, count, count(*), min, max or avg (as a
sum and a count), whatever arithmetic combines them: every aggregate is rolled up on its own
and the arithmetic is applied afterwards, so `sum(a) - sum(b)` or `sum(a) / count(*)` stay exact.
count_distinct never adds up (a customer of two days is one customer of the month), so a measure
with one is computed from the clean rows for each grain. A conditional aggregate
(`count(*) where status = 'returned'`) keeps its condition in each of its partials, next to the
KPI's filter, so its partials add up exactly like those of any other aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from analytics_pipelines.lib.kpi.expression_ast import arithmetic_nodes, condition_columns
from analytics_pipelines.lib.kpi.expression_sql import SqlElements, compile_derived, compile_measure
from analytics_pipelines.lib.kpi.expressions import (
    Aggregate,
    Arithmetic,
    BinaryOp,
    ColumnRef,
    Derived,
    KpiRef,
    Measure,
    Negate,
)

ROLLUP_FUNCTIONS = frozenset({"sum", "count", "min", "max", "avg"})


def aggregates_of(measure: Measure) -> list[Aggregate]:
    """The distinct aggregates of a measure, in order of appearance."""
    return measure.aggregates


def bytewise_text_columns(measure: Measure, text_dimensions: set[str]) -> set[str]:
    """Text columns only grouped by or counted distinct: never ordered (e.g. by min or max) and
    never compared in an aggregate's `where` (which may use < or >)."""
    candidates, ordered = set(text_dimensions), set[str]()
    for aggregate in aggregates_of(measure):
        if aggregate.condition is not None:
            ordered.update(condition_columns(aggregate.condition))
        if aggregate.argument is None:
            continue
        names = {
            n.name
            for n in arithmetic_nodes(aggregate.argument)
            if isinstance(n, ColumnRef) and n.type == "string"
        }
        (candidates if aggregate.function == "count_distinct" else ordered).update(names)
    return candidates - ordered


def can_roll_up(measure: Measure) -> bool:
    return all(a.function in ROLLUP_FUNCTIONS for a in aggregates_of(measure))


@dataclass(frozen=True)
class _Part:
    """One partial aggregate stored per fine period: how to compute it and how to roll it up."""

    name: str
    aggregate: Aggregate  # over the clean rows
    rollup: str  # the SQL aggregate applied to the partials: sum, min or max


def _parts(index: int, aggregate: Aggregate) -> list[_Part]:
    match aggregate.function:
        case "sum":
            return [_Part(f"_a{index}_sum", aggregate, "sum")]
        case "count":
            return [_Part(f"_a{index}_count", aggregate, "sum")]
        case "min" | "max":
            return [_Part(f"_a{index}_{aggregate.function}", aggregate, aggregate.function)]
        case "avg":
            return [
                _Part(f"_a{index}_sum", replace(aggregate, function="sum"), "sum"),
                _Part(f"_a{index}_count", replace(aggregate, function="count"), "sum"),
            ]
    raise ValueError(f"{aggregate.function} does not roll up")


def _replace_aggregates(node: Arithmetic, names: dict[Aggregate, str]) -> Arithmetic:
    match node:
        case Aggregate():
            return KpiRef(names[node])
        case Negate(operand=operand):
            return Negate(_replace_aggregates(operand, names))
        case BinaryOp(op=op, left=left, right=right):
            return BinaryOp(op, _replace_aggregates(left, names), _replace_aggregates(right, names))
        case _:
            return node


@dataclass(frozen=True)
class Rollup:
    """The partial aggregates of a measure and how to combine them back into its value."""

    measure: Measure

    @property
    def _indexed(self) -> list[tuple[int, Aggregate]]:
        return list(enumerate(aggregates_of(self.measure)))

    def partials(
        self,
        cols: SqlElements,
        *,
        where: sa.ColumnElement[bool] | None = None,
        empty_sum: Decimal | None = None,
    ) -> list[sa.ColumnElement[Any]]:
        """Labelled partial aggregates over the clean rows (for the finest periods).

        A partial sum over no matching row is `empty_sum`: summed again, partials of 0 give 0.
        """
        return [
            compile_measure(
                Measure(self.measure.text, part.aggregate, self.measure.value_type),
                cols,
                where=where,
                empty_sum=empty_sum if aggregate.function == "sum" else None,
            ).label(part.name)
            for index, aggregate in self._indexed
            for part in _parts(index, aggregate)
        ]

    def value(self, partials: SqlElements) -> sa.ColumnElement[Any]:
        """The measure over any group of fine periods, from their partial aggregates."""
        rolled: dict[str, sa.ColumnElement[Any]] = {}
        names: dict[Aggregate, str] = {}
        for index, aggregate in self._indexed:
            parts = {
                part.name: getattr(sa.func, part.rollup)(partials[part.name])
                for part in _parts(index, aggregate)
            }
            name = f"_a{index}"
            names[aggregate] = name
            if aggregate.function == "avg":
                # avg() itself is numeric sum / count: the same division, the same digits.
                total = sa.cast(parts[f"_a{index}_sum"], sa.Numeric())
                count = sa.cast(parts[f"_a{index}_count"], sa.Numeric())
                rolled[name] = total / sa.func.nullif(count, 0, type_=sa.Numeric())
            else:
                (rolled[name],) = parts.values()
        root = _replace_aggregates(self.measure.root, names)
        return compile_derived(Derived(self.measure.text, root), rolled)
