"""KPI expressions compiled to SQLAlchemy Core: names become the caller's column elements and
every literal a bound parameter, so no text of an expression is ever spliced into SQL.

Division always compiles to ``CAST(x AS NUMERIC) / NULLIF(CAST(y AS NUMERIC), 0)``: a zero
denominator yields NULL instead of failing the whole query, and integer operands do not truncate.
Parsing (and so catalog validation) lives in `lib.kpi.expressions`, which needs no SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeAlias, assert_never

import sqlalchemy as sa

from analytics_pipelines.lib.kpi.expressions import (
    Aggregate,
    And,
    Arithmetic,
    BinaryOp,
    BooleanColumn,
    ColumnRef,
    Comparison,
    ComparisonOperator,
    Condition,
    Constant,
    Derived,
    Filter,
    InList,
    IsNull,
    KpiRef,
    Measure,
    Negate,
    Not,
    Number,
    Or,
)

__all__ = ["SqlElements", "compile_derived", "compile_filter", "compile_measure"]


_ARITHMETIC_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}
_COMPARISON_OPERATORS: dict[ComparisonOperator, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

_Resolver = Callable[[str], sa.ColumnElement[Any]]

# A plain mapping or a SQLAlchemy column collection such as ``table.c`` / ``subquery.c``.
SqlElements: TypeAlias = (
    Mapping[str, sa.ColumnElement[Any]] | sa.ColumnCollection[str, sa.ColumnElement[Any]]
)


def _resolver(elements: SqlElements, what: str) -> _Resolver:
    def resolve(name: str) -> sa.ColumnElement[Any]:
        try:
            return elements[name]
        except KeyError:
            raise KeyError(f"no SQL expression supplied for {what} {name!r}") from None

    return resolve


def _numeric(value: Decimal) -> sa.ColumnElement[Any]:
    return sa.literal(value, sa.Numeric())


@dataclass(frozen=True)
class _Aggregation:
    """How aggregates are built: the filter each one applies, what a sum of no row is."""

    where: sa.ColumnElement[bool] | None = None
    empty_sum: Decimal | None = None


_PLAIN = _Aggregation()


def _compile_arithmetic(
    node: Arithmetic, resolve: _Resolver, how: _Aggregation = _PLAIN
) -> sa.ColumnElement[Any]:
    match node:
        case Number(value=value):
            return _numeric(value)
        case ColumnRef(name=name) | KpiRef(name=name):
            return resolve(name)
        case Negate(operand=operand):
            return -_compile_arithmetic(operand, resolve, how)
        case BinaryOp(op="/", left=left, right=right):
            numerator = sa.cast(_compile_arithmetic(left, resolve, how), sa.Numeric())
            denominator = sa.cast(_compile_arithmetic(right, resolve, how), sa.Numeric())
            return numerator / sa.func.nullif(denominator, _numeric(Decimal(0)), type_=sa.Numeric())
        case BinaryOp(op=op, left=left, right=right):
            result: sa.ColumnElement[Any] = _ARITHMETIC_OPERATORS[op](
                _compile_arithmetic(left, resolve, how), _compile_arithmetic(right, resolve, how)
            )
            return result
        case Aggregate(function="count", argument=None, condition=condition):
            return _filtered(sa.func.count(), _rows_of(condition, resolve, how))
        case Aggregate(function=function, argument=argument, condition=condition):
            assert argument is not None
            compiled = _compile_arithmetic(argument, resolve, how)
            where = _rows_of(condition, resolve, how)
            if function == "count_distinct":
                return _filtered(sa.func.count(sa.distinct(compiled)), where)
            aggregate: sa.ColumnElement[Any] = _filtered(
                getattr(sa.func, function)(compiled), where
            )
            if function == "sum" and how.empty_sum is not None:
                return sa.func.coalesce(aggregate, _numeric(how.empty_sum))
            return aggregate
        case _:
            assert_never(node)


def _bind(constant: Constant) -> sa.ColumnElement[Any]:
    sql_type: sa.types.TypeEngine[Any]
    match constant.type:
        case "integer" | "decimal":
            sql_type = sa.Numeric()
        case "string":
            sql_type = sa.String()
        case "boolean":
            sql_type = sa.Boolean()
        case "date":
            sql_type = sa.Date()
        case "timestamp":
            aware = isinstance(constant.value, dt.datetime) and constant.value.tzinfo is not None
            sql_type = sa.DateTime(timezone=aware)
        case _:
            assert_never(constant.type)
    return sa.literal(constant.value, sql_type)


def _compile_condition(node: Condition, resolve: _Resolver) -> sa.ColumnElement[bool]:
    def side(value: ColumnRef | Constant) -> sa.ColumnElement[Any]:
        return resolve(value.name) if isinstance(value, ColumnRef) else _bind(value)

    match node:
        case Comparison(op=op, left=left, right=right):
            compared: sa.ColumnElement[bool] = _COMPARISON_OPERATORS[op](side(left), side(right))
            return compared
        case InList(column=column, values=values, negated=negated):
            element = resolve(column.name)
            binds = [_bind(value) for value in values]
            return element.not_in(binds) if negated else element.in_(binds)
        case IsNull(column=column, negated=negated):
            element = resolve(column.name)
            return element.is_not(None) if negated else element.is_(None)
        case BooleanColumn(column=column):
            # Plain SQL truth semantics (NULL is not true), matching "flag = true".
            flag: sa.ColumnElement[bool] = resolve(column.name)
            return flag
        case And(operands=operands):
            return sa.and_(*(_compile_condition(o, resolve) for o in operands))
        case Or(operands=operands):
            return sa.or_(*(_compile_condition(o, resolve) for o in operands))
        case Not(operand=operand):
            return sa.not_(_compile_condition(operand, resolve))
        case _:
            assert_never(node)


def _rows_of(
    condition: Condition | None, resolve: _Resolver, how: _Aggregation
) -> sa.ColumnElement[bool] | None:
    """What an aggregate's FILTER keeps: the KPI's filter and the aggregate's own `where`."""
    if condition is None:
        return how.where
    own = _compile_condition(condition, resolve)
    return own if how.where is None else sa.and_(how.where, own)


def _filtered(aggregate: Any, where: sa.ColumnElement[bool] | None) -> sa.ColumnElement[Any]:
    return aggregate if where is None else aggregate.filter(where)


def compile_measure(
    m: Measure,
    cols: SqlElements,
    *,
    where: sa.ColumnElement[bool] | None = None,
    empty_sum: Decimal | None = None,
) -> sa.ColumnElement[Any]:
    """Build the aggregate SQL expression; ``cols`` maps column names to column elements.

    ``where`` becomes every aggregate's ``FILTER (WHERE …)``, joined with ``AND`` to the
    aggregate's own ``where`` condition if it has one, so a group whose rows all fail them still
    gets a value (a count of 0) instead of no row; a sum over no row is ``empty_sum`` (NULL when
    None).
    """
    return _compile_arithmetic(m.root, _resolver(cols, "column"), _Aggregation(where, empty_sum))


def compile_filter(f: Filter, cols: SqlElements) -> sa.ColumnElement[bool]:
    """Build the boolean SQL expression; every literal becomes a bound parameter."""
    return _compile_condition(f.root, _resolver(cols, "column"))


def compile_derived(d: Derived, kpis: SqlElements) -> sa.ColumnElement[Any]:
    """Build the SQL expression over already-computed KPI values; ``x / 0`` yields NULL."""
    return _compile_arithmetic(d.root, _resolver(kpis, "KPI"))
