"""The KPI expression language: its grammar read by lark, then names and types checked on the tree.

The grammar (the allow-list of shapes) is `expression_syntax`, the tokens `expression_tokens`, the
syntax tree `expression_ast`, the SQL `expression_sql`. Three small grammars share one tokenizer:

* **measure** -- aggregates over column arithmetic, optionally combined by more arithmetic::

      sum(amount) - sum(discount)
      sum(quantity * unit_price) / 100
      count_distinct(customer_id)
      (count(*) where status = 'returned') / count(*)

* **filter** -- a boolean condition over columns and literals::

      region in ('EU', 'US') and order_date >= '2026-01-01' and not is_refunded

* **derived** -- arithmetic over the names of other KPIs::

      (gross_revenue - net_revenue) / gross_revenue * 100

Safety does not rely on escaping: the parser accepts only an allow-list of tokens, names must be
catalog columns (or KPI names), and compilation builds SQLAlchemy Core objects -- names become the
caller's column elements and every literal becomes a bound parameter, so no text from an
expression is ever spliced into SQL.

Division always compiles to ``CAST(x AS NUMERIC) / NULLIF(CAST(y AS NUMERIC), 0)``: a zero
denominator yields NULL instead of failing the whole query, and integer operands do not truncate.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import Literal, NamedTuple, cast

from lark import Token, Tree

from analytics_pipelines.lib.kpi.expression_ast import (
    AGGREGATE_FUNCTIONS,
    COLUMN_TYPES,
    Aggregate,
    AggregateFunction,
    And,
    Arithmetic,
    ArithmeticOperator,
    BinaryOp,
    BooleanColumn,
    ColumnRef,
    ColumnType,
    Comparison,
    ComparisonOperator,
    CompiledMeasure,
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
    arithmetic_nodes,
)
from analytics_pipelines.lib.kpi.expression_conditions import (
    NUMERIC,
    TEMPORAL,
    TreeChecker,
    closest_name,
    did_you_mean_hint,
    end_of,
    known_list,
    start_of,
)
from analytics_pipelines.lib.kpi.expression_syntax import parse_tree
from analytics_pipelines.lib.kpi.expression_tokens import ExpressionError

# The AST and the error are re-exported: callers import the whole language from here.
__all__ = [
    "AGGREGATE_FUNCTIONS",
    "COLUMN_TYPES",
    "Aggregate",
    "AggregateFunction",
    "And",
    "Arithmetic",
    "ArithmeticOperator",
    "BinaryOp",
    "BooleanColumn",
    "ColumnRef",
    "ColumnType",
    "Comparison",
    "ComparisonOperator",
    "CompiledMeasure",
    "Condition",
    "Constant",
    "Derived",
    "ExpressionError",
    "Filter",
    "InList",
    "IsNull",
    "KpiRef",
    "Measure",
    "Negate",
    "Not",
    "Number",
    "Or",
    "closest_name",
    "parse_derived",
    "parse_filter",
    "parse_measure",
]

# None means "any column type".
_AGGREGATE_ARGUMENT_TYPES: dict[AggregateFunction, tuple[frozenset[str], str] | None] = {
    "sum": (NUMERIC, "a numeric (integer or decimal)"),
    "avg": (NUMERIC, "a numeric (integer or decimal)"),
    "min": (NUMERIC | TEMPORAL, "a numeric, date or timestamp"),
    "max": (NUMERIC | TEMPORAL, "a numeric, date or timestamp"),
    "count": None,
    "count_distinct": None,
}

# --------------------------------------------------------------------------------------------
# Checks on the syntax tree
# --------------------------------------------------------------------------------------------

# measure: outside aggregates; argument: inside an aggregate's parentheses; derived: KPI names.
_Mode = Literal["measure", "argument", "derived"]


class _Typed(NamedTuple):
    node: Arithmetic
    start: int
    end: int
    type: ColumnType
    # Position of the `where` of a conditional aggregate not wrapped in parentheses: as an operand
    # of arithmetic it would be ambiguous (does `where` cover the operator and what follows?).
    bare_where: int | None = None


class _Checker(TreeChecker):
    """Measures and derived KPIs: arithmetic over aggregates, columns, KPI names and numbers."""

    aggregate: str | None = None  # the aggregate whose argument is being checked

    def tree(self, start: str) -> Tree[Token]:
        (child,) = parse_tree(self.text, self.tokens, start).children
        assert isinstance(child, Tree)
        return child

    # -- arithmetic (measures, aggregate arguments, derived KPIs) --------------------------

    def arithmetic(self, node: Tree[Token] | Token, mode: _Mode) -> _Typed:
        assert isinstance(node, Tree), node  # every operand of the grammar is a rule
        match node.data:
            case "expr" | "term":
                return self.chain(node.children, mode)
            case "negate":
                minus, inner = node.children
                assert isinstance(minus, Token)
                with self.nested(start_of(minus)):
                    operand = self.arithmetic(inner, mode)
                return self.negate(minus, operand)
            case "number":
                (token,) = node.children
                assert isinstance(token, Token)
                number_type: ColumnType = "decimal" if "." in token.value else "integer"
                return _Typed(
                    Number(Decimal(token.value)), start_of(token), end_of(token), number_type
                )
            case "reference":
                (token,) = node.children
                assert isinstance(token, Token)
                return self.reference(token, mode)
            case "group":
                opening, inner, close = node.children
                assert isinstance(opening, Token) and isinstance(close, Token)
                with self.nested(start_of(opening)):
                    typed = self.arithmetic(inner, mode)
                return typed._replace(start=start_of(opening), end=end_of(close), bare_where=None)
            case "call":
                return self.call(node, mode)
            case "conditional":
                call, keyword, condition = node.children
                assert isinstance(call, Tree) and isinstance(keyword, Token)
                typed = self.call(call, mode)
                with self.nested(start_of(keyword)):
                    self.condition_of = f"the 'where' of {self.source(typed.start, typed.end)}"
                    where = self.condition(condition)
                    self.condition_of = "a filter"
                assert isinstance(typed.node, Aggregate)
                aggregate = Aggregate(typed.node.function, typed.node.argument, where)
                return _Typed(
                    aggregate, typed.start, node.meta.end_pos, typed.type, start_of(keyword)
                )
        raise AssertionError(f"unexpected syntax node {node.data}")

    def chain(self, children: list[Tree[Token] | Token], mode: _Mode) -> _Typed:
        """`a op b op c ...` of one precedence level, left-associative."""
        left = self.arithmetic(children[0], mode)
        for index in range(1, len(children), 2):
            op = children[index]
            assert isinstance(op, Token)
            self.require_unambiguous(left, followed_by=op)
            left = self.binary(op, left, self.arithmetic(children[index + 1], mode))
        return left

    def negate(self, minus: Token, operand: _Typed) -> _Typed:
        self.require_unambiguous(operand)
        self.require_numeric(operand, "unary '-'")
        if isinstance(operand.node, Number):
            return operand._replace(node=Number(-operand.node.value), start=start_of(minus))
        return _Typed(Negate(operand.node), start_of(minus), operand.end, operand.type)

    def reference(self, token: Token, mode: _Mode) -> _Typed:
        if mode == "derived":
            if token.value not in self.kpi_names:
                raise self.error(
                    start_of(token),
                    f"unknown KPI '{token.value}'{did_you_mean_hint(token.value, self.kpi_names)} "
                    f"(known: {known_list(self.kpi_names)})",
                )
            # KPI values are numbers; their exact SQL type is the engine's concern.
            return _Typed(KpiRef(token.value), start_of(token), end_of(token), "decimal")
        column = self.column(token)
        if mode == "measure":
            example = "sum" if column.type in NUMERIC else "count_distinct"
            raise self.error(
                start_of(token),
                f"column '{column.name}' must be inside an aggregate in a measure, "
                f"e.g. {example}({column.name})",
            )
        return _Typed(column, start_of(token), end_of(token), column.type)

    def call(self, node: Tree[Token], mode: _Mode) -> _Typed:
        name, opening, arguments, close = node.children
        assert isinstance(name, Token) and isinstance(opening, Token) and isinstance(close, Token)
        function = name.value.lower()
        if function not in AGGREGATE_FUNCTIONS:
            allowed = (
                "none: derived KPIs combine KPI names with + - * /"
                if mode == "derived"
                else ", ".join(AGGREGATE_FUNCTIONS)
            )
            raise self.error(
                start_of(name), f"unknown function '{name.value}' (allowed: {allowed})"
            )
        if mode == "derived":
            raise self.error(
                start_of(name),
                f"aggregate '{function}' is not allowed in a derived KPI; "
                "aggregate in a KPI measure and reference that KPI by name",
            )
        if mode == "argument":
            raise self.error(
                start_of(name),
                f"nested aggregate: '{function}' inside '{self.aggregate}' is not allowed",
            )
        aggregate = cast(AggregateFunction, function)
        if arguments is None:
            hint = " (use count(*) to count rows)" if aggregate == "count" else ""
            raise self.error(start_of(close), f"{aggregate}() needs an argument{hint}")
        assert isinstance(arguments, Tree)
        first, *others = arguments.children
        argument: _Typed | None = None
        if isinstance(first, Tree) and first.data == "star":
            if aggregate != "count":
                raise self.error(
                    first.meta.start_pos, f"'*' is only allowed in count(*), not in {aggregate}()"
                )
        else:
            self.aggregate = aggregate
            with self.nested(start_of(opening)):
                argument = self.arithmetic(first, "argument")
            self.aggregate = None
            self.check_argument(aggregate, argument)
        if others:
            comma = others[0]
            assert isinstance(comma, Token)
            raise self.error(start_of(comma), f"{aggregate}() takes exactly one argument")

        result_type: ColumnType
        if aggregate in ("count", "count_distinct"):
            result_type = "integer"
        elif aggregate == "avg":
            result_type = "decimal"
        else:
            assert argument is not None
            result_type = argument.type
        aggregated = Aggregate(aggregate, argument.node if argument else None)
        return _Typed(aggregated, start_of(name), end_of(close), result_type)

    def require_unambiguous(self, operand: _Typed, followed_by: Token | None = None) -> None:
        """Refuse a conditional aggregate as an operand of arithmetic unless it is parenthesised."""
        if operand.bare_where is None:
            return
        wrapped = f"({self.source(operand.start, operand.end)})"
        if followed_by is not None:
            raise self.error(
                start_of(followed_by),
                f"'{followed_by.value}' after a conditional aggregate: wrap the conditional "
                f"aggregate in parentheses, e.g. {wrapped} {followed_by.value} ..., so that "
                "'where' clearly ends before the arithmetic",
            )
        raise self.error(
            operand.bare_where,
            f"a conditional aggregate inside arithmetic must be wrapped in parentheses: "
            f"{wrapped}; 'where' applies to that aggregate only",
        )

    def check_argument(self, aggregate: AggregateFunction, argument: _Typed) -> None:
        allowed = _AGGREGATE_ARGUMENT_TYPES[aggregate]
        if allowed is None or argument.type in allowed[0]:
            return
        kind = " column" if isinstance(argument.node, ColumnRef) else ""
        raise self.error(
            argument.start,
            f"{aggregate}() needs {allowed[1]} argument; "
            f"'{self.source(argument.start, argument.end)}' is a {argument.type}{kind}",
        )

    def require_numeric(self, operand: _Typed, what: str) -> None:
        if operand.type not in NUMERIC:
            kind = " column" if isinstance(operand.node, ColumnRef) else ""
            raise self.error(
                operand.start,
                f"{what} needs numeric operands; "
                f"'{self.source(operand.start, operand.end)}' is a {operand.type}{kind}",
            )

    def binary(self, op: Token, left: _Typed, right: _Typed) -> _Typed:
        self.require_unambiguous(right)
        self.require_numeric(left, f"'{op.value}'")
        self.require_numeric(right, f"'{op.value}'")
        if op.value == "/" and isinstance(right.node, Number) and right.node.value == 0:
            raise self.error(right.start, "division by the constant zero")
        result_type: ColumnType = (
            "decimal" if op.value == "/" or "decimal" in (left.type, right.type) else "integer"
        )
        node = BinaryOp(cast(ArithmeticOperator, op.value), left.node, right.node)
        return _Typed(node, left.start, right.end, result_type)

    # -- conditions (filters, aggregate conditions) ----------------------------------------


def _check_column_types(columns: Mapping[str, ColumnType]) -> None:
    for name, column_type in columns.items():
        if column_type not in COLUMN_TYPES:
            raise ValueError(
                f"column {name!r} has unsupported type {column_type!r} "
                f"(expected one of: {', '.join(sorted(COLUMN_TYPES))})"
            )


def parse_measure(text: str, columns: Mapping[str, ColumnType]) -> Measure:
    """Parse and validate a measure such as ``sum(amount) - sum(discount)``."""
    _check_column_types(columns)
    checker = _Checker(text, columns=columns)
    result = checker.arithmetic(checker.tree("measure"), "measure")
    if not any(isinstance(node, Aggregate) for node in arithmetic_nodes(result.node)):
        raise checker.error(
            result.start, "a measure needs an aggregate such as sum(...), count(*) or avg(...)"
        )
    return Measure(text, result.node, result.type)


def parse_filter(text: str, columns: Mapping[str, ColumnType]) -> Filter:
    """Parse and validate a filter such as ``region in ('EU', 'US') and amount > 0``."""
    _check_column_types(columns)
    checker = _Checker(text, columns=columns)
    return Filter(text, checker.condition(checker.tree("filter")))


def parse_derived(text: str, kpi_names: Collection[str]) -> Derived:
    """Parse and validate a derived KPI such as ``net_revenue / order_count``."""
    checker = _Checker(text, kpi_names=kpi_names)
    result = checker.arithmetic(checker.tree("derived"), "derived")
    if not any(isinstance(node, KpiRef) for node in arithmetic_nodes(result.node)):
        raise checker.error(result.start, "a derived KPI must reference at least one KPI")
    return Derived(text, result.node)
