"""The KPI expression language: a recursive-descent parser over a safe tokenizer.

The tokens are `expression_tokens`, the syntax tree `expression_ast`, the SQL `expression_sql`.
Three small grammars share one tokenizer:

* **measure** -- aggregates over column arithmetic, optionally combined by more arithmetic::

      sum(amount) - sum(discount)
      sum(quantity * unit_price) / 100
      count_distinct(customer_id)

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
from analytics_pipelines.lib.kpi.expression_tokens import ExpressionError, Token, tokenize

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

# Deep nesting would otherwise surface as a RecursionError.
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

# Words of the filter grammar itself; they can never be column names.
_GRAMMAR_KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null", "true", "false"})

# SQL keywords refused outright even if a catalog column happens to carry the name: they are the
# vocabulary of injection attempts (sub-selects, statements, casts) and never needed here.
_RESERVED_WORDS = frozenset(
    {
        "all",
        "alter",
        "any",
        "as",
        "between",
        "by",
        "call",
        "case",
        "cast",
        "copy",
        "create",
        "delete",
        "distinct",
        "drop",
        "else",
        "end",
        "except",
        "exec",
        "execute",
        "exists",
        "from",
        "grant",
        "group",
        "having",
        "ilike",
        "insert",
        "intersect",
        "into",
        "join",
        "like",
        "limit",
        "offset",
        "order",
        "returning",
        "revoke",
        "select",
        "similar",
        "table",
        "then",
        "truncate",
        "union",
        "update",
        "values",
        "when",
        "where",
        "with",
    }
)
_RESERVED_HINTS = {
    "distinct": "; use count_distinct(x) to count distinct values",
    "between": "; use x >= low and x <= high",
    "cast": "; column types come from the catalog",
}


# --------------------------------------------------------------------------------------------
# Parser
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


class _Parser:
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
        self.index = 0
        self.depth = 0
        self.aggregate: str | None = None  # the aggregate whose argument is being parsed
        self.condition_of = "a filter"  # what the condition being parsed belongs to, for messages
        if self.current.kind == "end":
            raise self.error(0, "empty expression")

    # -- token helpers ---------------------------------------------------------------------

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.current
        if token.kind != "end":
            self.index += 1
        return token

    def at_op(self, *ops: str) -> bool:
        return self.current.kind == "op" and self.current.text in ops

    def at_word(self, *words: str) -> bool:
        return self.current.word in words

    def error(self, pos: int, reason: str) -> ExpressionError:
        return ExpressionError(self.text, pos, reason)

    def unexpected(self, what: str = "") -> ExpressionError:
        token = self.current
        if token.kind == "end":
            return self.error(token.pos, "unexpected end of expression" + what)
        if token.word in _RESERVED_WORDS:
            return self.reserved(token)
        if token.kind == "op" and token.text == ")":
            if self.open_parens() == 0:
                return self.error(token.pos, "unbalanced ')': no matching '('")
            return self.error(token.pos, f"unexpected ')'{what or '; expected a value'}")
        return self.error(token.pos, f"unexpected {token.describe()}{what}")

    def open_parens(self) -> int:
        consumed = self.tokens[: self.index]
        return sum(t.text == "(" for t in consumed if t.kind == "op") - sum(
            t.text == ")" for t in consumed if t.kind == "op"
        )

    def expect_end(self) -> None:
        if self.current.kind != "end":
            raise self.unexpected(" after the end of the expression")

    def expect_close(self, opening: Token) -> Token:
        if self.at_op(")"):
            return self.advance()
        if self.current.kind == "end":
            raise self.error(
                self.current.pos, f"missing ')' to close the '(' at position {opening.pos}"
            )
        raise self.error(
            self.current.pos,
            f"expected ')' to close the '(' at position {opening.pos}, "
            f"found {self.current.describe()}",
        )

    @contextmanager
    def nested(self, token: Token) -> Iterator[None]:
        self.depth += 1
        if self.depth > MAX_NESTING_DEPTH:
            raise self.error(token.pos, f"expression nested too deeply (over {MAX_NESTING_DEPTH})")
        try:
            yield
        finally:
            self.depth -= 1

    def reserved(self, token: Token) -> ExpressionError:
        if token.word == "where":
            return self.error(
                token.pos,
                "'where' must directly follow an aggregate call, as in "
                "count(*) where status = 'returned' (one 'where' per aggregate: join conditions "
                "with 'and'; to narrow every aggregate, use the KPI's filter)",
            )
        return self.error(
            token.pos,
            f"'{token.text}' is a reserved SQL keyword and not allowed in an expression"
            + _RESERVED_HINTS.get(token.word, ""),
        )

    def check_name(self, token: Token) -> None:
        if token.word in _RESERVED_WORDS:
            raise self.reserved(token)
        if token.word in _GRAMMAR_KEYWORDS:
            raise self.error(token.pos, f"unexpected keyword '{token.text}'")

    def column(self, token: Token) -> ColumnRef:
        column_type = self.columns.get(token.text)
        if column_type is None:
            raise self.error(
                token.pos,
                f"unknown column '{token.text}'{_did_you_mean(token.text, self.columns)} "
                f"(known: {_known(self.columns)})",
            )
        return ColumnRef(token.text, column_type)

    # -- arithmetic (measures, aggregate arguments, derived KPIs) --------------------------

    def arithmetic(self, mode: _Mode) -> _Typed:
        left = self.term(mode)
        while self.at_op("+", "-"):
            op = self.advance()
            self.require_unambiguous(left, followed_by=op)
            left = self.binary(op, left, self.term(mode))
        return left

    def term(self, mode: _Mode) -> _Typed:
        left = self.unary(mode)
        while self.at_op("*", "/"):
            op = self.advance()
            self.require_unambiguous(left, followed_by=op)
            left = self.binary(op, left, self.unary(mode))
        return left

    def unary(self, mode: _Mode) -> _Typed:
        if not self.at_op("-"):
            return self.primary(mode)
        minus = self.advance()
        with self.nested(minus):
            operand = self.unary(mode)
        self.require_unambiguous(operand)
        self.require_numeric(operand, "unary '-'")
        if isinstance(operand.node, Number):
            return operand._replace(node=Number(-operand.node.value), start=minus.pos)
        return _Typed(Negate(operand.node), minus.pos, operand.end, operand.type)

    def primary(self, mode: _Mode) -> _Typed:
        token = self.current
        if token.kind == "number":
            self.advance()
            number_type: ColumnType = "decimal" if "." in token.text else "integer"
            return _Typed(Number(Decimal(token.text)), token.pos, token.end, number_type)
        if self.at_op("("):
            self.advance()
            with self.nested(token):
                inner = self.arithmetic(mode)
            close = self.expect_close(token)
            return inner._replace(start=token.pos, end=close.end, bare_where=None)
        if token.kind == "name":
            self.check_name(token)
            if self.peek().kind == "op" and self.peek().text == "(":
                return self.call(mode)
            self.advance()
            return self.reference(token, mode)
        raise self.unexpected()

    def reference(self, token: Token, mode: _Mode) -> _Typed:
        if mode == "derived":
            if token.text not in self.kpi_names:
                raise self.error(
                    token.pos,
                    f"unknown KPI '{token.text}'{_did_you_mean(token.text, self.kpi_names)} "
                    f"(known: {_known(self.kpi_names)})",
                )
            # KPI values are numbers; their exact SQL type is the engine's concern.
            return _Typed(KpiRef(token.text), token.pos, token.end, "decimal")
        column = self.column(token)
        if mode == "measure":
            example = "sum" if column.type in _NUMERIC else "count_distinct"
            raise self.error(
                token.pos,
                f"column '{column.name}' must be inside an aggregate in a measure, "
                f"e.g. {example}({column.name})",
            )
        return _Typed(column, token.pos, token.end, column.type)

    def call(self, mode: _Mode) -> _Typed:
        name = self.advance()
        opening = self.advance()
        function = name.word
        if function not in AGGREGATE_FUNCTIONS:
            allowed = (
                "none: derived KPIs combine KPI names with + - * /"
                if mode == "derived"
                else ", ".join(AGGREGATE_FUNCTIONS)
            )
            raise self.error(name.pos, f"unknown function '{name.text}' (allowed: {allowed})")
        if mode == "derived":
            raise self.error(
                name.pos,
                f"aggregate '{function}' is not allowed in a derived KPI; "
                "aggregate in a KPI measure and reference that KPI by name",
            )
        if mode == "argument":
            raise self.error(
                name.pos, f"nested aggregate: '{function}' inside '{self.aggregate}' is not allowed"
            )
        aggregate: AggregateFunction = function

        argument: _Typed | None = None
        if self.at_op("*"):
            star = self.advance()
            if aggregate != "count":
                raise self.error(star.pos, f"'*' is only allowed in count(*), not in {aggregate}()")
        elif self.at_op(")"):
            hint = " (use count(*) to count rows)" if aggregate == "count" else ""
            raise self.error(self.current.pos, f"{aggregate}() needs an argument{hint}")
        else:
            self.aggregate = aggregate
            with self.nested(opening):
                argument = self.arithmetic("argument")
            self.aggregate = None
            self.check_argument(aggregate, argument)
        if self.at_word("where"):
            inside = self.text[opening.end : self.current.pos].strip()
            raise self.error(
                self.current.pos,
                f"'where' inside the parentheses of {aggregate}(): write it after the closing "
                f"parenthesis, as in {aggregate}({inside}) where …",
            )
        if self.at_op(","):
            raise self.error(self.current.pos, f"{aggregate}() takes exactly one argument")
        close = self.expect_close(opening)

        result_type: ColumnType
        if aggregate in ("count", "count_distinct"):
            result_type = "integer"
        elif aggregate == "avg":
            result_type = "decimal"
        else:
            assert argument is not None
            result_type = argument.type
        node = Aggregate(aggregate, argument.node if argument else None)
        if not self.at_word("where"):
            return _Typed(node, name.pos, close.end, result_type)
        keyword = self.advance()
        call = self.text[name.pos : close.end]
        if self.current.kind == "end" or self.at_op(")"):
            raise self.error(
                self.current.pos,
                f"'where' needs a condition, e.g. {call} where status = 'returned'",
            )
        with self.nested(keyword):
            self.condition_of = f"the 'where' of {call}"
            condition = self.condition()
            self.condition_of = "a filter"
        end = self.tokens[self.index - 1].end
        node = Aggregate(node.function, node.argument, condition)
        return _Typed(node, name.pos, end, result_type, bare_where=keyword.pos)

    def require_unambiguous(self, operand: _Typed, followed_by: Token | None = None) -> None:
        """Refuse a conditional aggregate as an operand of arithmetic unless it is parenthesised."""
        if operand.bare_where is None:
            return
        wrapped = f"({self.text[operand.start : operand.end]})"
        if followed_by is not None:
            op = followed_by
            raise self.error(
                op.pos,
                f"'{op.text}' after a conditional aggregate: wrap the conditional aggregate in "
                f"parentheses, e.g. {wrapped} {op.text} ..., so that 'where' clearly ends "
                "before the arithmetic",
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
            f"'{self.text[argument.start : argument.end]}' is a {argument.type}{kind}",
        )

    def require_numeric(self, operand: _Typed, what: str) -> None:
        if operand.type not in _NUMERIC:
            kind = " column" if isinstance(operand.node, ColumnRef) else ""
            raise self.error(
                operand.start,
                f"{what} needs numeric operands; "
                f"'{self.text[operand.start : operand.end]}' is a {operand.type}{kind}",
            )

    def binary(self, op: Token, left: _Typed, right: _Typed) -> _Typed:
        self.require_unambiguous(right)
        self.require_numeric(left, f"'{op.text}'")
        self.require_numeric(right, f"'{op.text}'")
        if op.text == "/" and isinstance(right.node, Number) and right.node.value == 0:
            raise self.error(right.start, "division by the constant zero")
        result_type: ColumnType = (
            "decimal" if op.text == "/" or "decimal" in (left.type, right.type) else "integer"
        )
        node = BinaryOp(cast(ArithmeticOperator, op.text), left.node, right.node)
        return _Typed(node, left.start, right.end, result_type)

    # -- filters ---------------------------------------------------------------------------

    def condition(self) -> Condition:
        operands = [self.conjunction()]
        while self.at_word("or"):
            self.advance()
            operands.append(self.conjunction())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def conjunction(self) -> Condition:
        operands = [self.negation()]
        while self.at_word("and"):
            self.advance()
            operands.append(self.negation())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def negation(self) -> Condition:
        if not self.at_word("not"):
            return self.predicate()
        keyword = self.advance()
        with self.nested(keyword):
            return Not(self.negation())

    def predicate(self) -> Condition:
        if self.at_op("("):
            opening = self.advance()
            with self.nested(opening):
                inner = self.condition()
            self.expect_close(opening)
            return inner
        left = self.operand()
        if self.at_op("=", "!=", "<>", "<", "<=", ">", ">="):
            op = self.advance()
            return self.comparison(op, left, self.operand())
        if self.at_word("in") or (self.at_word("not") and self.peek().word == "in"):
            return self.in_list(left)
        if self.at_word("is"):
            return self.is_null(left)
        if isinstance(left.value, ColumnRef):
            if left.value.type == "boolean":
                return BooleanColumn(left.value)
            raise self.unexpected(
                f"; expected a comparison, 'in' or 'is null' after column '{left.value.name}'"
            )
        raise self.error(
            left.start, f"a condition needs a column; '{self.source(left)}' is a constant"
        )

    def operand(self) -> _Operand:
        token = self.current
        if token.kind == "number":
            self.advance()
            return _Operand("number", Decimal(token.text), token.pos, token.end)
        if self.at_op("-") and self.peek().kind == "number":
            self.advance()
            number = self.advance()
            return _Operand("number", -Decimal(number.text), token.pos, number.end)
        if token.kind == "string":
            self.advance()
            return _Operand("string", token.text, token.pos, token.end)
        if token.word in ("true", "false"):
            self.advance()
            return _Operand("boolean", token.word == "true", token.pos, token.end)
        if token.word == "null":
            self.advance()
            return _Operand("null", None, token.pos, token.end)
        if token.kind == "name":
            self.check_name(token)
            if self.peek().kind == "op" and self.peek().text == "(":
                reason = (
                    f"aggregate '{token.word}' is not allowed in {self.condition_of}"
                    if token.word in AGGREGATE_FUNCTIONS
                    else f"unknown function '{token.text}' (filters allow no functions)"
                )
                raise self.error(token.pos, reason)
            self.advance()
            return _Operand("column", self.column(token), token.pos, token.end)
        if self.at_op("("):
            if self.peek().kind == "name":
                # Surfaces "'select' is a reserved SQL keyword" for sub-select attempts.
                self.check_name(self.peek())
            raise self.unexpected("; parentheses may group conditions, not values")
        raise self.unexpected()

    def source(self, operand: _Operand) -> str:
        return self.text[operand.start : operand.end]

    def comparison(self, op: Token, left: _Operand, right: _Operand) -> Comparison:
        symbol = cast(ComparisonOperator, "!=" if op.text == "<>" else op.text)
        for side in (left, right):
            if side.kind == "null":
                negation = "is not null" if symbol == "!=" else "is null"
                raise self.error(side.start, f"use '{negation}' instead of '{op.text} null'")
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
                op.pos, f"operator '{op.text}' is not allowed on boolean column '{column.name}'"
            )
        return Comparison(symbol, lhs, rhs)

    def in_list(self, left: _Operand) -> InList:
        negated = self.at_word("not")
        if negated:
            self.advance()
        keyword = self.advance()
        if not isinstance(left.value, ColumnRef):
            raise self.error(left.start, f"'{keyword.text}' needs a column on its left")
        column = left.value
        if not self.at_op("("):
            raise self.unexpected(f"; expected '(' after '{keyword.text}'")
        opening = self.advance()
        if self.at_op(")"):
            raise self.error(self.current.pos, "empty 'in' list")
        values: list[Constant] = []
        while True:
            item = self.operand()
            if item.kind == "column":
                raise self.error(item.start, "'in' lists may only contain literals")
            if item.kind == "null":
                raise self.error(item.start, "null is not allowed in an 'in' list; use 'is null'")
            values.append(self.constant(item, column))
            if not self.at_op(","):
                break
            self.advance()
        self.expect_close(opening)
        return InList(column, tuple(values), negated)

    def is_null(self, left: _Operand) -> IsNull:
        keyword = self.advance()
        negated = self.at_word("not")
        if negated:
            self.advance()
        if not self.at_word("null"):
            raise self.unexpected("; expected 'null' or 'not null' after 'is'")
        self.advance()
        if not isinstance(left.value, ColumnRef):
            raise self.error(left.start, f"'{keyword.text} null' needs a column on its left")
        return IsNull(left.value, negated)

    def constant(self, literal: _Operand, column: ColumnRef) -> Constant:
        """Type-check a literal against the column it is compared with and convert it."""
        if column.type in _NUMERIC and literal.kind == "number":
            return Constant(literal.value, "decimal")
        if column.type == "string" and literal.kind == "string":
            return Constant(literal.value, "string")
        if column.type == "boolean" and literal.kind == "boolean":
            return Constant(literal.value, "boolean")
        if column.type == "date" and literal.kind == "string":
            try:
                return Constant(dt.date.fromisoformat(literal.value), "date")
            except ValueError:
                raise self.error(
                    literal.start,
                    f"invalid date {self.source(literal)} for date column '{column.name}'; "
                    "expected 'YYYY-MM-DD'",
                ) from None
        if column.type == "timestamp" and literal.kind == "string":
            try:
                return Constant(dt.datetime.fromisoformat(literal.value), "timestamp")
            except ValueError:
                raise self.error(
                    literal.start,
                    f"invalid timestamp {self.source(literal)} for timestamp column "
                    f"'{column.name}'; expected ISO 8601 such as '2026-01-01' "
                    "or '2026-01-01T12:00:00'",
                ) from None
        raise self.error(
            literal.start,
            f"cannot compare {column.type} column '{column.name}' "
            f"with {_LITERAL_DESCRIPTIONS[literal.kind]} ({self.source(literal)})",
        )


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
    parser = _Parser(text, columns=columns)
    result = parser.arithmetic("measure")
    parser.expect_end()
    if not any(isinstance(node, Aggregate) for node in arithmetic_nodes(result.node)):
        raise parser.error(
            result.start, "a measure needs an aggregate such as sum(...), count(*) or avg(...)"
        )
    return Measure(text, result.node, result.type)


def parse_filter(text: str, columns: Mapping[str, ColumnType]) -> Filter:
    """Parse and validate a filter such as ``region in ('EU', 'US') and amount > 0``."""
    _check_column_types(columns)
    parser = _Parser(text, columns=columns)
    root = parser.condition()
    parser.expect_end()
    return Filter(text, root)


def parse_derived(text: str, kpi_names: Collection[str]) -> Derived:
    """Parse and validate a derived KPI such as ``net_revenue / order_count``."""
    parser = _Parser(text, kpi_names=kpi_names)
    result = parser.arithmetic("derived")
    parser.expect_end()
    if not any(isinstance(node, KpiRef) for node in arithmetic_nodes(result.node)):
        raise parser.error(result.start, "a derived KPI must reference at least one KPI")
    return Derived(text, result.node)
