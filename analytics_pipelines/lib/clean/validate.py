"""Catalog rules compiled to SQL: cast-safe typing of raw text and one predicate per failed rule.

PostgreSQL 15 has no `pg_input_is_valid`, so a guarded cast checks the text first and casts only
what will succeed. Measured on 2M rows: a simple anchored regex (integers, decimals) costs
~0.35 µs a row; a full timestamp regex ~3.6 µs, so dates and timestamps are checked by their
digit shape (one hashed IN-list lookup) plus calendar checks on fixed positions instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from analytics_pipelines.lib.catalog.models import ColumnSpec, SourceSpec
from analytics_pipelines.lib.tables import SQL_TYPES

BOOLEAN_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
DIGITS = "0123456789"
BIGINT_MIN, BIGINT_MAX = -9223372036854775808, 9223372036854775807
_INTEGER = r"^[+-]?[0-9]+$"
_DECIMAL = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$"
# Longest decimal text accepted: far beyond any business value, far below numeric's own limits.
DECIMAL_MAX_LENGTH = 1000
_EXPONENT_DECIMAL = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)e[+-]?[0-9]{1,3}$"
_C = "C"
# Words PostgreSQL casts to dates or numbers that are not data.
SPECIAL_WORDS = sorted(
    {"now", "today", "tomorrow", "yesterday", "epoch", "allballs", "nan"}
    | {sign + word for sign in ("", "+", "-") for word in ("infinity", "inf")}
)

# Shapes a timestamp may take once every digit is mapped to 0: date, optional time (minutes,
# seconds, up to 9 fraction digits), optional offset. A hashed IN-list makes this one lookup.
_TIMES = ["", " 00:00", "T00:00"] + [
    sep + "00:00:00" + fraction
    for sep in (" ", "T")
    for fraction in ["", *("." + "0" * n for n in range(1, 10))]
]
_OFFSETS = ["", "Z", "+00", "-00", "+00:00", "-00:00", "+0000", "-0000"]
TIMESTAMP_SHAPES = sorted(
    {"0000-00-00"} | {"0000-00-00" + t + o for t in _TIMES if t for o in _OFFSETS}
)

RULES = ("type", "required", "primary_key", "allowed_values", "min", "max", "pattern")


@dataclass(frozen=True)
class RuleCheck:
    """One rule of one column: `failed` is true for a row that breaks it."""

    column: str
    rule: str
    failed: ColumnElement[bool]
    message: str


def _text(value: str) -> ColumnElement[str]:
    return sa.literal(value, sa.Text)


def _c(expr: ColumnElement[str]) -> ColumnElement[str]:
    # Byte-wise comparison: digits compare the same in every collation, and "C" is the cheapest.
    return expr.collate(_C)


def normalise(raw: ColumnElement[str], column: ColumnSpec, source: SourceSpec) -> ColumnElement:
    """Raw text → the text that is typed: empty means missing; numbers and flags are trimmed."""
    if column.type == "string":
        return sa.func.nullif(raw, "")
    value = sa.func.nullif(sa.func.btrim(raw), "")
    if column.type == "decimal" and source.reader.decimal_separator == ",":
        value = sa.func.replace(value, ",", ".")
    return value


def _integer_expr(n: ColumnElement) -> ColumnElement:
    # One simple regex is cheaper than a chain of string functions; 19+ digits may overflow.
    return sa.case(
        (
            n.regexp_match(_INTEGER),
            sa.case(
                (sa.func.length(n) <= 18, sa.cast(n, sa.BigInteger)),
                (
                    sa.func.length(n) <= 40,
                    sa.case(
                        (
                            sa.cast(n, sa.Numeric).between(BIGINT_MIN, BIGINT_MAX),
                            sa.cast(sa.cast(n, sa.Numeric), sa.BigInteger),
                        ),
                        else_=None,
                    ),
                ),
                else_=None,
            ),
        ),
        else_=None,
    )


def _decimal_expr(n: ColumnElement) -> ColumnElement:
    valid = sa.case(
        (sa.func.length(n) > DECIMAL_MAX_LENGTH, False),
        (n.regexp_match(_DECIMAL), True),
        # Scientific notation (1e-05, as some exporters write floats) is rare: checked last.
        else_=sa.func.lower(n).regexp_match(_EXPONENT_DECIMAL),
    )
    return sa.case((valid, sa.cast(n, sa.Numeric)), else_=None)


def _valid_calendar_date(n: ColumnElement) -> ColumnElement[bool]:
    """Month and day exist (the text is known to start with the shape 0000-00-00)."""
    year, month, day = sa.func.substr(n, 1, 4), sa.func.substr(n, 6, 2), sa.func.substr(n, 9, 2)
    y = sa.cast(year, sa.Integer)
    leap = sa.or_(sa.and_(y % 4 == 0, y % 100 != 0), y % 400 == 0)
    last_day = sa.case(
        (month.in_(["04", "06", "09", "11"]), _text("30")),
        (month == "02", sa.case((leap, _text("29")), else_=_text("28"))),
        else_=_text("31"),
    )
    return sa.and_(
        _c(year) >= "0001",
        _c(month).between("01", "12"),
        _c(day) >= "01",
        _c(day) <= _c(last_day),
    )


def _digit_shape(n: ColumnElement) -> ColumnElement[str]:
    return sa.func.translate(n, "123456789", "000000000")


def _date_expr(n: ColumnElement) -> ColumnElement:
    valid = sa.case((_digit_shape(n) == "0000-00-00", _valid_calendar_date(n)), else_=False)
    return sa.case((valid, sa.cast(n, sa.Date)), else_=None)


def _timestamp_expr(n: ColumnElement) -> ColumnElement:
    shape = _digit_shape(n)
    tail = sa.func.substr(n, 11)
    sign_at = sa.func.greatest(sa.func.strpos(tail, "+"), sa.func.strpos(tail, "-"))
    has_seconds = sa.func.substr(shape, 17, 1) == ":"
    clock_ok = sa.and_(
        _c(sa.func.substr(n, 12, 2)) <= "23",
        _c(sa.func.substr(n, 15, 2)) <= "59",
        sa.case((has_seconds, _c(sa.func.substr(n, 18, 2)) <= "59"), else_=True),
    )
    offset_ok = sa.case((sign_at > 0, _c(sa.func.substr(tail, sign_at + 1, 2)) <= "15"), else_=True)
    valid = sa.case(
        (
            shape.in_(TIMESTAMP_SHAPES),
            sa.and_(
                _valid_calendar_date(n),
                sa.case((sa.func.length(n) > 10, sa.and_(clock_ok, offset_ok)), else_=True),
            ),
        ),
        else_=False,
    )
    return sa.case((valid, _timestamp_cast(n)), else_=None)


def _timestamp_cast(n: ColumnElement) -> ColumnElement:
    # The cleaning transaction runs with TimeZone = the source's zone: naive text is read in it,
    # an offset written in the data wins. One cast instead of detecting the offset per row.
    return sa.cast(n, sa.DateTime(timezone=True))


def typed(
    n: ColumnElement, column: ColumnSpec, source: SourceSpec, *, guarded: bool = True
) -> ColumnElement:
    """The typed value of normalised text `n`, NULL when the text is missing or not of the type.

    Unguarded expressions cast directly: much faster, but one bad value aborts the statement,
    so they are only an optimistic first attempt (see stage.build_stage).
    """
    kind = column.type
    if kind == "string":
        return n
    if kind == "boolean":
        return sa.case(BOOLEAN_WORDS, value=sa.func.lower(n), else_=None)
    if not guarded:
        # Keep the optimistic path's accepted language equal to the guarded one's: no special
        # words (now, infinity, NaN…) and ISO dates only, checked cheaply; anything else that
        # PostgreSQL refuses aborts the attempt and the guarded path decides.
        if kind in ("date", "timestamp"):
            iso = sa.and_(
                sa.func.substr(n, 5, 1) == "-",
                sa.func.substr(n, 8, 1) == "-",
                sa.func.lower(n).not_in(SPECIAL_WORDS),
            )
            cast = _timestamp_cast(n) if kind == "timestamp" else sa.cast(n, sa.Date)
            return sa.case((iso, cast), else_=None)
        if kind == "decimal":
            return sa.case(
                (sa.func.lower(n).not_in(SPECIAL_WORDS), sa.cast(n, sa.Numeric)), else_=None
            )
        return sa.cast(n, SQL_TYPES[kind])
    if kind == "integer":
        return _integer_expr(n)
    if kind == "decimal":
        return _decimal_expr(n)
    if kind == "date":
        return _date_expr(n)
    return _timestamp_expr(n)


TYPE_WORDS = {
    "string": "text",
    "integer": "an integer",
    "decimal": "a decimal number",
    "boolean": "true/false/yes/no/1/0",
    "date": "a date (YYYY-MM-DD)",
    "timestamp": "a timestamp (YYYY-MM-DD HH:MM[:SS[.f]] with optional offset)",
}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def rule_checks(
    column: ColumnSpec, source: SourceSpec, n: ColumnElement, t: ColumnElement
) -> list[RuleCheck]:
    """The rules the catalog declares for `column`, over its normalised text `n` and typed `t`."""
    name = column.name
    checks: list[RuleCheck] = []
    if column.type != "string":
        checks.append(
            RuleCheck(
                name,
                "type",
                sa.and_(n.is_not(None), t.is_(None)),
                f"expected {TYPE_WORDS[column.type]}",
            )
        )
    if column.required:
        checks.append(RuleCheck(name, "required", n.is_(None), "value is required"))
    elif name in source.primary_key:
        checks.append(RuleCheck(name, "primary_key", n.is_(None), "primary key column is empty"))
    if column.allowed_values is not None:
        allowed = list(column.allowed_values)
        checks.append(
            RuleCheck(
                name,
                "allowed_values",
                sa.and_(n.is_not(None), n.not_in(allowed)),
                "not one of: " + ", ".join(allowed),
            )
        )
    if column.min is not None:
        checks.append(
            RuleCheck(
                name,
                "min",
                t < sa.cast(sa.literal(column.min), sa.Numeric),
                f"below the minimum {_number(column.min)}",
            )
        )
    if column.max is not None:
        checks.append(
            RuleCheck(
                name,
                "max",
                t > sa.cast(sa.literal(column.max), sa.Numeric),
                f"above the maximum {_number(column.max)}",
            )
        )
    if column.pattern is not None:
        checks.append(
            RuleCheck(
                name,
                "pattern",
                sa.and_(n.is_not(None), sa.not_(n.regexp_match(column.pattern))),
                f"does not match {column.pattern}",
            )
        )
    return checks


def failures_json(checks: list[RuleCheck]) -> ColumnElement:
    """A jsonb array of {column, rule, message} for every rule the row breaks."""
    items = [
        sa.case(
            (
                sa.func.coalesce(check.failed, False),
                sa.func.jsonb_build_object(
                    "column", check.column, "rule", check.rule, "message", check.message
                ),
            ),
            else_=None,
        )
        for check in checks
    ]
    if not items:
        return sa.cast(sa.literal("[]"), postgresql.JSONB)
    return sa.func.to_jsonb(sa.func.array_remove(postgresql.array(items), None))


def any_failed(checks: list[RuleCheck]) -> ColumnElement[bool]:
    if not checks:
        return sa.false()
    return sa.func.coalesce(sa.or_(*(check.failed for check in checks)), False)


def json_object(pairs: list[tuple[str, ColumnElement]]) -> ColumnElement:
    """jsonb_build_object over any number of pairs (the function takes at most 50 pairs)."""
    chunks = [pairs[i : i + 50] for i in range(0, len(pairs), 50)] or [[]]
    objects = [
        sa.func.jsonb_build_object(*(part for key, value in chunk for part in (key, value)))
        for chunk in chunks
    ]
    result: ColumnElement = objects[0]
    for other in objects[1:]:
        result = result.op("||")(other)
    return result


def sql_type(column: ColumnSpec) -> sa.types.TypeEngine:
    return SQL_TYPES[column.type]
