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

import datetime as dt
import difflib
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Literal, NamedTuple, cast

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
from analytics_pipelines.lib.kpi.expression_syntax import parse_tree
from analytics_pipelines.lib.kpi.expression_tokens import ExpressionError, tokenize
from analytics_pipelines.lib.kpi.expression_tokens import Token as SourceToken

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

# The checks walk the tree recursively: deep nesting would otherwise surface as a RecursionError.
MAX_NESTING_DEPTH = 64

_NUMERIC: frozenset[str] = frozenset({"integer", "decimal"})
_TEMPORAL: frozenset[str] = frozenset({"date", "timestamp"})

# None means "any column type".
_AGGREGATE_ARGUMENT_TYPES: dict[AggregateFunction, tuple[frozenset[str], str] | None] = {
    "sum": (_NUMERIC, "a numeric (integer or decimal)"),
    "avg": (_NUMERIC, "a numeric (integer or decimal)"),
    "min": (_NUMERIC | _TEMPORAL, "a numeric, date or timestamp"),
    "max": (_NUMERIC | _TEMPORAL, "a numeric, date or timestamp"),
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


class _Operand(NamedTuple):
    """A filter operand before type checking: a column or a not-yet-typed literal."""

    kind: Literal["column", "number", "string", "boolean", "null"]
    value: Any
    start: int
    end: int


_LITERAL_DESCRIPTIONS = {
    "number": "a number",
    "string": "a string",
    "boolean": "a boolean",
    "null": "null",
}


def _known(names: Collection[str], limit: int = 20) -> str:
    ordered = sorted(names)
    if not ordered:
        return "none"
    shown = ", ".join(ordered[:limit])
    return shown + (", ..." if len(ordered) > limit else "")


def closest_name(name: str, names: Collection[str]) -> str | None:
    """The name a typo most likely meant: same letters in another case first, else the closest."""
    folded = [n for n in names if n.lower() == name.lower()]
    close = folded or difflib.get_close_matches(name, list(names), n=1)
    return close[0] if close else None


def _did_you_mean(name: str, names: Collection[str]) -> str:
    close = closest_name(name, names)
    return f"; did you mean '{close}'?" if close else ""


class _Checker:
    """Walks the syntax tree top-down: names against the catalog, types, then the AST."""

    def __init__(
        self,
        text: str,
        *,
        columns: Mapping[str, ColumnType] | None = None,
        kpi_names: Collection[str] | None = None,
    ) -> None:
        self.text = text
        self.columns: Mapping[str, ColumnType] = columns or {}
        self.kpi_names: Collection[str] = kpi_names or ()
        self.tokens = tokenize(text)
        self.depth = 0
        self.aggregate: str | None = None  # the aggregate whose argument is being checked
        self.condition_of = "a filter"  # what the condition being checked belongs to

    def tree(self, start: str) -> Tree[Token]:
        (child,) = parse_tree(self.text, self.tokens, start).children
        assert isinstance(child, Tree)
        return child

    def error(self, pos: int, reason: str) -> ExpressionError:
        return ExpressionError(self.text, pos, reason)

    def source(self, start: int, end: int) -> str:
        return self.text[start:end]

    def after(self, end: int) -> SourceToken:
        """The first token at or after the position `end` (the end token if none)."""
        return next(t for t in self.tokens if t.pos >= end or t.kind == "end")

    @contextmanager
    def nested(self, pos: int) -> Iterator[None]:
        self.depth += 1
        if self.depth > MAX_NESTING_DEPTH:
            raise self.error(pos, f"expression nested too deeply (over {MAX_NESTING_DEPTH})")
        try:
            yield
        finally:
            self.depth -= 1

    def column(self, token: Token) -> ColumnRef:
        column_type = self.columns.get(token.value)
        if column_type is None:
            raise self.error(
                _start(token),
                f"unknown column '{token.value}'{_did_you_mean(token.value, self.columns)} "
                f"(known: {_known(self.columns)})",
            )
        return ColumnRef(token.value, column_type)

    # -- arithmetic (measures, aggregate arguments, derived KPIs) --------------------------

    def arithmetic(self, node: Tree[Token] | Token, mode: _Mode) -> _Typed:
        assert isinstance(node, Tree), node  # every operand of the grammar is a rule
        match node.data:
            case "expr" | "term":
                return self.chain(node.children, mode)
            case "negate":
                minus, inner = node.children
                assert isinstance(minus, Token)
                with self.nested(_start(minus)):
                    operand = self.arithmetic(inner, mode)
                return self.negate(minus, operand)
            case "number":
                (token,) = node.children
                assert isinstance(token, Token)
                number_type: ColumnType = "decimal" if "." in token.value else "integer"
                return _Typed(Number(Decimal(token.value)), _start(token), _end(token), number_type)
            case "reference":
                (token,) = node.children
                assert isinstance(token, Token)
                return self.reference(token, mode)
            case "group":
                opening, inner, close = node.children
                assert isinstance(opening, Token) and isinstance(close, Token)
                with self.nested(_start(opening)):
                    typed = self.arithmetic(inner, mode)
                return typed._replace(start=_start(opening), end=_end(close), bare_where=None)
            case "call":
                return self.call(node, mode)
            case "conditional":
                call, keyword, condition = node.children
                assert isinstance(call, Tree) and isinstance(keyword, Token)
                typed = self.call(call, mode)
                with self.nested(_start(keyword)):
                    self.condition_of = f"the 'where' of {self.source(typed.start, typed.end)}"
                    where = self.condition(condition)
                    self.condition_of = "a filter"
                assert isinstance(typed.node, Aggregate)
                aggregate = Aggregate(typed.node.function, typed.node.argument, where)
                return _Typed(
                    aggregate, typed.start, node.meta.end_pos, typed.type, _start(keyword)
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
            return operand._replace(node=Number(-operand.node.value), start=_start(minus))
        return _Typed(Negate(operand.node), _start(minus), operand.end, operand.type)

    def reference(self, token: Token, mode: _Mode) -> _Typed:
        if mode == "derived":
            if token.value not in self.kpi_names:
                raise self.error(
                    _start(token),
                    f"unknown KPI '{token.value}'{_did_you_mean(token.value, self.kpi_names)} "
                    f"(known: {_known(self.kpi_names)})",
                )
            # KPI values are numbers; their exact SQL type is the engine's concern.
            return _Typed(KpiRef(token.value), _start(token), _end(token), "decimal")
        column = self.column(token)
        if mode == "measure":
            example = "sum" if column.type in _NUMERIC else "count_distinct"
            raise self.error(
                _start(token),
                f"column '{column.name}' must be inside an aggregate in a measure, "
                f"e.g. {example}({column.name})",
            )
        return _Typed(column, _start(token), _end(token), column.type)

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
            raise self.error(_start(name), f"unknown function '{name.value}' (allowed: {allowed})")
        if mode == "derived":
            raise self.error(
                _start(name),
                f"aggregate '{function}' is not allowed in a derived KPI; "
                "aggregate in a KPI measure and reference that KPI by name",
            )
        if mode == "argument":
            raise self.error(
                _start(name),
                f"nested aggregate: '{function}' inside '{self.aggregate}' is not allowed",
            )
        aggregate = cast(AggregateFunction, function)
        if arguments is None:
            hint = " (use count(*) to count rows)" if aggregate == "count" else ""
            raise self.error(_start(close), f"{aggregate}() needs an argument{hint}")
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
            with self.nested(_start(opening)):
                argument = self.arithmetic(first, "argument")
            self.aggregate = None
            self.check_argument(aggregate, argument)
        if others:
            comma = others[0]
            assert isinstance(comma, Token)
            raise self.error(_start(comma), f"{aggregate}() takes exactly one argument")

        result_type: ColumnType
        if aggregate in ("count", "count_distinct"):
            result_type = "integer"
        elif aggregate == "avg":
            result_type = "decimal"
        else:
            assert argument is not None
            result_type = argument.type
        aggregated = Aggregate(aggregate, argument.node if argument else None)
        return _Typed(aggregated, _start(name), _end(close), result_type)

    def require_unambiguous(self, operand: _Typed, followed_by: Token | None = None) -> None:
        """Refuse a conditional aggregate as an operand of arithmetic unless it is parenthesised."""
        if operand.bare_where is None:
            return
        wrapped = f"({self.source(operand.start, operand.end)})"
        if followed_by is not None:
            raise self.error(
                _start(followed_by),
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
        if operand.type not in _NUMERIC:
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

    def condition(self, node: Tree[Token] | Token) -> Condition:
        assert isinstance(node, Tree)
        match node.data:
            case "condition":
                return Or(tuple(self.condition(child) for child in node.children))
            case "conjunction":
                return And(tuple(self.condition(child) for child in node.children))
            case "negation":
                keyword, inner = node.children
                with self.nested(node.meta.start_pos):
                    return Not(self.condition(inner))
            case "condition_group":
                _, inner, _ = node.children
                with self.nested(node.meta.start_pos):
                    return self.condition(inner)
            case "comparison":
                left, op, right = node.children
                assert isinstance(op, Token)
                return self.comparison(op, self.operand(left), self.operand(right))
            case "in_list":
                return self.in_list(node)
            case "is_null":
                left, keyword, negated, _ = node.children
                assert isinstance(keyword, Token)
                operand = self.operand(left)
                if not isinstance(operand.value, ColumnRef):
                    raise self.error(
                        operand.start, f"'{keyword.value} null' needs a column on its left"
                    )
                return IsNull(operand.value, negated is not None)
            case "bare":
                (child,) = node.children
                operand = self.operand(child)
                if isinstance(operand.value, ColumnRef):
                    if operand.value.type == "boolean":
                        return BooleanColumn(operand.value)
                    following = self.after(operand.end)
                    raise self.error(
                        following.pos,
                        (
                            "unexpected end of expression"
                            if following.kind == "end"
                            else f"unexpected {following.describe()}"
                        )
                        + f"; expected a comparison, 'in' or 'is null' after column "
                        f"'{operand.value.name}'",
                    )
                raise self.error(
                    operand.start,
                    f"a condition needs a column; '{self.source(operand.start, operand.end)}' "
                    "is a constant",
                )
        raise AssertionError(f"unexpected syntax node {node.data}")

    def operand(self, node: Tree[Token] | Token) -> _Operand:
        assert isinstance(node, Tree)
        start, end = node.meta.start_pos, node.meta.end_pos
        match node.data:
            case "column":
                (token,) = node.children
                assert isinstance(token, Token)
                return _Operand("column", self.column(token), start, end)
            case "number_literal":
                minus, token = node.children
                assert isinstance(token, Token)
                value = Decimal(token.value)
                return _Operand("number", -value if minus is not None else value, start, end)
            case "string_literal":
                (token,) = node.children
                assert isinstance(token, Token)
                return _Operand("string", token.value, start, end)
            case "boolean_literal":
                (token,) = node.children
                assert isinstance(token, Token)
                return _Operand("boolean", token.value.lower() == "true", start, end)
            case "null_literal":
                return _Operand("null", None, start, end)
            case "call_operand":
                (call,) = node.children
                assert isinstance(call, Tree)
                name = call.children[0]
                assert isinstance(name, Token)
                function = name.value.lower()
                reason = (
                    f"aggregate '{function}' is not allowed in {self.condition_of}"
                    if function in AGGREGATE_FUNCTIONS
                    else f"unknown function '{name.value}' (filters allow no functions)"
                )
                raise self.error(start, reason)
        raise AssertionError(f"unexpected syntax node {node.data}")

    def comparison(self, op: Token, left: _Operand, right: _Operand) -> Comparison:
        symbol = cast(ComparisonOperator, "!=" if op.value == "<>" else op.value)
        for side in (left, right):
            if side.kind == "null":
                negation = "is not null" if symbol == "!=" else "is null"
                raise self.error(side.start, f"use '{negation}' instead of '{op.value} null'")
        left_col = left.value if left.kind == "column" else None
        right_col = right.value if right.kind == "column" else None
        if left_col is None and right_col is None:
            raise self.error(left.start, "a comparison needs at least one column")
        if left_col is not None and right_col is not None:
            if _type_family(left_col.type) != _type_family(right_col.type):
                raise self.error(
                    right.start,
                    f"cannot compare {left_col.type} column '{left_col.name}' "
                    f"with {right_col.type} column '{right_col.name}'",
                )
            lhs: ColumnRef | Constant = left_col
            rhs: ColumnRef | Constant = right_col
            column = left_col
        elif left_col is not None:
            column, lhs, rhs = left_col, left_col, self.constant(right, left_col)
        else:
            assert right_col is not None
            column, lhs, rhs = right_col, self.constant(left, right_col), right_col
        if column.type == "boolean" and symbol not in ("=", "!="):
            raise self.error(
                _start(op),
                f"operator '{op.value}' is not allowed on boolean column '{column.name}'",
            )
        return Comparison(symbol, lhs, rhs)

    def in_list(self, node: Tree[Token]) -> InList:
        left, negated, keyword, _, items, close = node.children
        assert isinstance(keyword, Token) and isinstance(close, Token)
        operand = self.operand(left)
        if not isinstance(operand.value, ColumnRef):
            raise self.error(operand.start, f"'{keyword.value}' needs a column on its left")
        column = operand.value
        if items is None:
            raise self.error(_start(close), "empty 'in' list")
        assert isinstance(items, Tree)
        values: list[Constant] = []
        for child in items.children:
            if isinstance(child, Token):  # a comma
                continue
            item = self.operand(child)
            if item.kind == "column":
                raise self.error(item.start, "'in' lists may only contain literals")
            if item.kind == "null":
                raise self.error(item.start, "null is not allowed in an 'in' list; use 'is null'")
            values.append(self.constant(item, column))
        return InList(column, tuple(values), negated is not None)

    def constant(self, literal: _Operand, column: ColumnRef) -> Constant:
        """Type-check a literal against the column it is compared with and convert it."""
        if column.type in _NUMERIC and literal.kind == "number":
            return Constant(literal.value, "decimal")
        if column.type == "string" and literal.kind == "string":
            return Constant(literal.value, "string")
        if column.type == "boolean" and literal.kind == "boolean":
            return Constant(literal.value, "boolean")
        text = self.source(literal.start, literal.end)
        if column.type == "date" and literal.kind == "string":
            try:
                return Constant(dt.date.fromisoformat(literal.value), "date")
            except ValueError:
                raise self.error(
                    literal.start,
                    f"invalid date {text} for date column '{column.name}'; expected 'YYYY-MM-DD'",
                ) from None
        if column.type == "timestamp" and literal.kind == "string":
            try:
                return Constant(dt.datetime.fromisoformat(literal.value), "timestamp")
            except ValueError:
                raise self.error(
                    literal.start,
                    f"invalid timestamp {text} for timestamp column "
                    f"'{column.name}'; expected ISO 8601 such as '2026-01-01' "
                    "or '2026-01-01T12:00:00'",
                ) from None
        raise self.error(
            literal.start,
            f"cannot compare {column.type} column '{column.name}' "
            f"with {_LITERAL_DESCRIPTIONS[literal.kind]} ({text})",
        )


def _start(token: Token) -> int:
    return token.start_pos or 0


def _end(token: Token) -> int:
    return token.end_pos or 0


def _type_family(column_type: ColumnType) -> str:
    if column_type in _NUMERIC:
        return "numeric"
    if column_type in _TEMPORAL:
        return "temporal"
    return column_type


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
