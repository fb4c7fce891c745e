"""Checks on the syntax tree of a KPI expression: what every kind shares (positions, nesting,
catalog columns, did-you-mean) and the conditions of filters and aggregates' `where`.

The arithmetic of measures and derived KPIs builds on this in `expressions`.
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
    And,
    BooleanColumn,
    ColumnRef,
    ColumnType,
    Comparison,
    ComparisonOperator,
    Condition,
    Constant,
    InList,
    IsNull,
    Not,
    Or,
)
from analytics_pipelines.lib.kpi.expression_tokens import ExpressionError, tokenize
from analytics_pipelines.lib.kpi.expression_tokens import Token as SourceToken

__all__ = [
    "MAX_NESTING_DEPTH",
    "NUMERIC",
    "TEMPORAL",
    "TreeChecker",
    "closest_name",
    "did_you_mean_hint",
    "end_of",
    "known_list",
    "start_of",
]

# The checks walk the tree recursively: deep nesting would otherwise surface as a RecursionError.
MAX_NESTING_DEPTH = 64

NUMERIC: frozenset[str] = frozenset({"integer", "decimal"})
TEMPORAL: frozenset[str] = frozenset({"date", "timestamp"})


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


def known_list(names: Collection[str], limit: int = 20) -> str:
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


def did_you_mean_hint(name: str, names: Collection[str]) -> str:
    close = closest_name(name, names)
    return f"; did you mean '{close}'?" if close else ""


class TreeChecker:
    """Walks a syntax tree top-down: names against the catalog, types, then the AST."""

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
        self.condition_of = "a filter"  # what the condition being checked belongs to

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
                start_of(token),
                f"unknown column '{token.value}'{did_you_mean_hint(token.value, self.columns)} "
                f"(known: {known_list(self.columns)})",
            )
        return ColumnRef(token.value, column_type)

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
            if type_family(left_col.type) != type_family(right_col.type):
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
                start_of(op),
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
            raise self.error(start_of(close), "empty 'in' list")
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
        if column.type in NUMERIC and literal.kind == "number":
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


def start_of(token: Token) -> int:
    return token.start_pos or 0


def end_of(token: Token) -> int:
    return token.end_pos or 0


def type_family(column_type: ColumnType) -> str:
    if column_type in NUMERIC:
        return "numeric"
    if column_type in TEMPORAL:
        return "temporal"
    return column_type
