"""The syntax tree of the KPI expression language, shared by the parser (`expressions`), the SQL
compiler (`expression_sql`), the roll-up (`rollup`) and catalog checks (`plan`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, TypeAlias, assert_never, get_args

ColumnType = Literal["string", "integer", "decimal", "boolean", "date", "timestamp"]
COLUMN_TYPES: frozenset[str] = frozenset(get_args(ColumnType))

AggregateFunction = Literal["sum", "count", "count_distinct", "avg", "min", "max"]
AGGREGATE_FUNCTIONS: tuple[AggregateFunction, ...] = get_args(AggregateFunction)

ArithmeticOperator = Literal["+", "-", "*", "/"]
ComparisonOperator = Literal["=", "!=", "<", "<=", ">", ">="]


@dataclass(frozen=True)
class Number:
    value: Decimal


@dataclass(frozen=True)
class ColumnRef:
    name: str
    type: ColumnType


@dataclass(frozen=True)
class KpiRef:
    name: str


@dataclass(frozen=True)
class Negate:
    operand: Arithmetic


@dataclass(frozen=True)
class BinaryOp:
    op: ArithmeticOperator
    left: Arithmetic
    right: Arithmetic


@dataclass(frozen=True)
class Aggregate:
    """`function(argument)`, optionally `where condition`: the rows it aggregates.

    A condition narrows this aggregate alone (SQL `FILTER (WHERE …)`), on top of the KPI's filter.
    """

    function: AggregateFunction
    argument: Arithmetic | None  # None only for count(*)
    condition: Condition | None = None


Arithmetic: TypeAlias = Number | ColumnRef | KpiRef | Negate | BinaryOp | Aggregate


@dataclass(frozen=True)
class Constant:
    """A filter literal, already converted to the Python value it is bound as."""

    value: Decimal | str | bool | dt.date | dt.datetime
    type: ColumnType


@dataclass(frozen=True)
class Comparison:
    op: ComparisonOperator
    left: ColumnRef | Constant
    right: ColumnRef | Constant


@dataclass(frozen=True)
class InList:
    column: ColumnRef
    values: tuple[Constant, ...]
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    column: ColumnRef
    negated: bool = False


@dataclass(frozen=True)
class BooleanColumn:
    column: ColumnRef


@dataclass(frozen=True)
class And:
    operands: tuple[Condition, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    operand: Condition


Condition: TypeAlias = Comparison | InList | IsNull | BooleanColumn | And | Or | Not


def arithmetic_nodes(node: Arithmetic) -> Iterator[Arithmetic]:
    yield node
    match node:
        case Negate(operand=operand):
            yield from arithmetic_nodes(operand)
        case BinaryOp(left=left, right=right):
            yield from arithmetic_nodes(left)
            yield from arithmetic_nodes(right)
        case Aggregate(argument=argument) if argument is not None:
            yield from arithmetic_nodes(argument)
        case _:
            pass


def condition_columns(node: Condition) -> Iterator[str]:
    """The names of the columns a condition reads (repeats included)."""
    match node:
        case Comparison(left=left, right=right):
            for side in (left, right):
                if isinstance(side, ColumnRef):
                    yield side.name
        case InList(column=column) | IsNull(column=column) | BooleanColumn(column=column):
            yield column.name
        case And(operands=operands) | Or(operands=operands):
            for operand in operands:
                yield from condition_columns(operand)
        case Not(operand=operand):
            yield from condition_columns(operand)
        case _:
            assert_never(node)


@dataclass(frozen=True)
class Measure:
    """A parsed, validated measure expression."""

    text: str
    root: Arithmetic
    value_type: ColumnType  # SQL type family of the result, e.g. "integer" for count(*)

    @property
    def aggregates(self) -> list[Aggregate]:
        """The distinct aggregates of the measure, in order of appearance."""
        return list(
            dict.fromkeys(n for n in arithmetic_nodes(self.root) if isinstance(n, Aggregate))
        )

    @property
    def conditions(self) -> list[Condition]:
        """The `where` conditions of its aggregates."""
        return [a.condition for a in self.aggregates if a.condition is not None]

    @property
    def columns(self) -> frozenset[str]:
        """Every column it reads: in aggregate arguments and in their conditions."""
        arguments = {n.name for n in arithmetic_nodes(self.root) if isinstance(n, ColumnRef)}
        return frozenset(arguments.union(*map(condition_columns, self.conditions)))

    @property
    def is_additive(self) -> bool:
        """True when partial results can be re-aggregated (a single sum/count/min/max)."""
        return isinstance(self.root, Aggregate) and self.root.function in {
            "sum",
            "count",
            "min",
            "max",
        }


# The brief for callers names the parsed measure "CompiledMeasure"; both names are the same class.
CompiledMeasure = Measure


@dataclass(frozen=True)
class Filter:
    """A parsed, validated filter condition."""

    text: str
    root: Condition

    @property
    def columns(self) -> frozenset[str]:
        return frozenset(condition_columns(self.root))


@dataclass(frozen=True)
class Derived:
    """A parsed, validated derived-KPI expression."""

    text: str
    root: Arithmetic

    @property
    def references(self) -> frozenset[str]:
        return frozenset(n.name for n in arithmetic_nodes(self.root) if isinstance(n, KpiRef))
