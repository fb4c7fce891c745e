"""The clean stage's one rule engine: catalog rules evaluated in polars over batches of raw text.

Every row of every format and every case (first load beside the COPY, a file cleaned after
its COPY, a correction, a reinstated row, a quarantine replay, a rebuild) is decided here:
which values are of their type, which rules a row breaks and the failure reasons it gets
(column, rule, message, in a fixed order). The language is the one PostgreSQL's own casts
accept, restricted so that every accepted value casts (no `now`, `infinity`, `NaN`, only ISO
dates): a row that passes here is stored exactly as PostgreSQL's input functions store it.

A batch is a frame of raw text columns (named as in `raw.<source>`) plus `_file_id` and
`_line`; `RuleEngine.check` returns its normalised text and the failing rows' quarantine rows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal

import polars as pl

from analytics_pipelines.lib.catalog.models import ColumnSpec, SourceSpec
from analytics_pipelines.lib.tables import FILE_ID, LINE

BOOLEAN_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
BIGINT_MIN, BIGINT_MAX = -9223372036854775808, 9223372036854775807
# Longest decimal text accepted: far beyond any business value, far below numeric's own limits.
DECIMAL_MAX_LENGTH = 1000
_INTEGER = r"^[+-]?[0-9]+$"
_DECIMAL = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$"
_EXPONENT_DECIMAL = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)e[+-]?[0-9]{1,3}$"
_DATE_SHAPE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_TIMESTAMP_SHAPE = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?$"
)
_BIGINT_MAX_DIGITS = str(BIGINT_MAX)
_BIGINT_MIN_DIGITS = str(BIGINT_MIN)[1:]

TYPE_WORDS = {
    "string": "text",
    "integer": "an integer",
    "decimal": "a decimal number",
    "boolean": "true/false/yes/no/1/0",
    "date": "a date (YYYY-MM-DD)",
    "timestamp": "a timestamp (YYYY-MM-DD HH:MM[:SS[.f]] with optional offset)",
}
QUARANTINE_COLUMNS = ["source", "file_id", "line", "raw_values", "failures"]
# Column names of a checked batch: the normalised text and the quick validity of each column.
NORMALISED, VALID, BAD = "__n_", "__v_", "__bad"
# The event time's wall time, parsed once by the checks when it is a plain wall time.
WALL = "__w"


class UnsupportedPattern(ValueError):
    """A catalog pattern the rule engine's regular expressions (Rust syntax) cannot compile."""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def rule_messages(column: ColumnSpec, source: SourceSpec) -> list[tuple[str, str]]:
    """(rule, message) of every rule of `column`, in the order failures are listed."""
    rules: list[tuple[str, str]] = []
    if column.type != "string":
        rules.append(("type", f"expected {TYPE_WORDS[column.type]}"))
    if column.required:
        rules.append(("required", "value is required"))
    elif column.name in source.primary_key:
        rules.append(("primary_key", "primary key column is empty"))
    if column.allowed_values is not None:
        rules.append(("allowed_values", "not one of: " + ", ".join(column.allowed_values)))
    if column.min is not None:
        rules.append(("min", f"below the minimum {_number(column.min)}"))
    if column.max is not None:
        rules.append(("max", f"above the maximum {_number(column.max)}"))
    if column.pattern is not None:
        rules.append(("pattern", f"does not match {column.pattern}"))
    return rules


def check_patterns(source: SourceSpec) -> None:
    """UnsupportedPattern, naming the column, for a pattern polars cannot compile."""
    for column in source.columns:
        if column.pattern is None:
            continue
        try:
            pl.select(pl.lit("").str.contains(column.pattern))
        except Exception as error:  # any compile error: not a pattern this engine can run
            raise UnsupportedPattern(
                f"{source.name}.{column.name}: pattern {column.pattern!r} is not supported by"
                f" the clean stage's regular expressions (Rust regex syntax: no look-around,"
                f" no back-references): {str(error).splitlines()[0]}"
            ) from None


@dataclass
class Checked:
    """One checked batch: every row with its normalised text (`__n_<column>`), `__bad`, and
    `_file_id`/`_line`; the failing rows as quarantine rows (`QUARANTINE_COLUMNS`)."""

    staged: pl.DataFrame
    quarantine: pl.DataFrame

    @property
    def bad_rows(self) -> int:
        return self.quarantine.height

    def good(self, declared: list[str]) -> pl.DataFrame:
        """The passing rows: normalised text under the declared names, file id, line (and the
        event time's wall time when the checks parsed it)."""
        staged = self.staged
        rows = staged if not self.bad_rows else staged.filter(~pl.col(BAD))
        return rows.select(
            *(pl.col(f"{NORMALISED}{name}").alias(name) for name in declared),
            pl.col(FILE_ID),
            pl.col(LINE),
            *([pl.col(WALL)] if WALL in staged.columns else []),
        )


def wall_time(n: pl.Expr, wall_format: str) -> pl.Expr:
    # Event times are nearly all distinct: polars' per-value parse cache only costs.
    return n.str.to_datetime(wall_format, time_unit="us", strict=False, cache=False)


def _canonical_shape(pattern: str) -> str:
    """The exact digit shape of a `%Y-%m-%d[ T%H:%M:%S]` format: fixed places, ASCII digits."""
    widths = {"%Y": "[0-9]{4}", "%m": "[0-9]{2}", "%d": "[0-9]{2}", "%H": "[0-9]{2}"}
    widths |= {"%M": "[0-9]{2}", "%S": "[0-9]{2}"}
    for code, digits in widths.items():
        pattern = pattern.replace(code, digits)
    return f"^{pattern}$"


def _canonical(n: pl.Expr, parsed: pl.Expr, pattern: str) -> pl.Expr:
    """`n` is `parsed` written exactly in `pattern` (`%Y-%m-%d`, optionally `[ T]%H:%M:%S`), a
    valid date or wall time of year 1 or later.

    The same answer as printing `parsed` back and comparing it with `n`, at half the cost: the
    shape fixes every digit's place (polars' parser alone also takes `2024- 1-05` or `+024`),
    the parse proves the calendar and the clock, and a 60th second, which polars reads as the
    next minute, is refused as the print-back test refused it.
    """
    shaped = n.str.contains(_canonical_shape(pattern)) & parsed.is_not_null()
    seconds = n.str.slice(17, 2) <= "59" if "%S" in pattern else pl.lit(True)
    return shaped & (parsed.dt.year() >= 1) & seconds


class RuleEngine:
    """The rules of one source, applied to batches of raw text (see the module docstring)."""

    def __init__(self, source: SourceSpec, raw_columns: list[str]) -> None:
        check_patterns(source)
        self.source = source
        # Every raw column, for the quarantined rows' raw values (extra columns included).
        self.raw_columns = raw_columns
        self.declared = [c.name for c in source.columns]
        self._checks_json = {
            c.name: [
                (rule, json.dumps({"column": c.name, "rule": rule, "message": message}))
                for rule, message in rule_messages(c, source)
            ]
            for c in source.columns
        }

    # -- normalised text and type validity -------------------------------------------------

    def _raw(self, frame: pl.DataFrame, name: str) -> pl.Expr:
        return pl.col(name) if name in frame.columns else pl.lit(None, dtype=pl.String)

    def _normalised(self, frame: pl.DataFrame, column: ColumnSpec) -> pl.Expr:
        """Raw text → the text that is typed: empty means missing; numbers and flags are trimmed."""
        raw = self._raw(frame, column.name)
        if column.type == "string":
            return pl.when(raw == "").then(None).otherwise(raw)
        trimmed = raw.str.strip_chars(" ")
        value = pl.when(trimmed == "").then(None).otherwise(trimmed)
        if column.type == "decimal" and self.source.reader.decimal_separator == ",":
            value = value.str.replace_all(",", ".", literal=True)
        return value

    @staticmethod
    def _valid_integer(n: pl.Expr) -> pl.Expr:
        # Up to 18 characters a value cannot overflow, and polars' integer parser accepts
        # exactly this language (optional sign, ASCII digits): no regex needed.
        short = (n.str.len_bytes() <= 18) & n.cast(pl.Int64, strict=False).is_not_null()
        digits = n.str.replace(r"^[+-]", "").str.strip_chars_start("0")
        limit = (
            pl.when(n.str.starts_with("-"))
            .then(pl.lit(_BIGINT_MIN_DIGITS))
            .otherwise(pl.lit(_BIGINT_MAX_DIGITS))
        )
        size = digits.str.len_bytes()
        in_range = (size < 19) | ((size == 19) & (digits <= limit))
        length = n.str.len_chars()
        long = (length > 18) & (length <= 40) & n.str.contains(_INTEGER) & in_range
        return short | long

    @staticmethod
    def _valid_decimal(n: pl.Expr) -> pl.Expr:
        return (n.str.len_chars() <= DECIMAL_MAX_LENGTH) & (
            n.str.contains(_DECIMAL) | n.str.to_lowercase().str.contains(_EXPONENT_DECIMAL)
        )

    @staticmethod
    def _valid_calendar(n: pl.Expr) -> pl.Expr:
        year = n.str.slice(0, 4).cast(pl.Int32, strict=False)
        month = n.str.slice(5, 2).cast(pl.Int32, strict=False)
        day = n.str.slice(8, 2).cast(pl.Int32, strict=False)
        leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
        last = (
            pl.when(month.is_in([4, 6, 9, 11]))
            .then(30)
            .when(month == 2)
            .then(pl.when(leap).then(29).otherwise(28))
            .otherwise(31)
        )
        return (year >= 1) & month.is_between(1, 12) & (day >= 1) & (day <= last)

    def _valid_timestamp(self, n: pl.Expr) -> pl.Expr:
        hour = n.str.slice(11, 2)
        minute = n.str.slice(14, 2)
        has_seconds = n.str.slice(16, 1) == ":"
        clock = (hour <= "23") & (minute <= "59")
        clock = clock & (~has_seconds | (n.str.slice(17, 2) <= "59"))
        # PostgreSQL reads offsets up to 15:59; minutes beyond 59 it refuses.
        offset = n.str.slice(10).str.extract_groups(r"[+-](?<h>[0-9]{2}):?(?<m>[0-9]{2})?$")
        offset_ok = offset.struct.field("h").is_null() | (
            (offset.struct.field("h") <= "15")
            & (offset.struct.field("m").is_null() | (offset.struct.field("m") <= "59"))
        )
        timed = n.str.len_chars() > 10
        return (
            n.str.contains(_TIMESTAMP_SHAPE)
            & self._valid_calendar(n)
            & (~timed | (clock & offset_ok))
        )

    @staticmethod
    def _wall_format(frame: pl.DataFrame, column: ColumnSpec) -> str | None:
        """The plain wall-time format (no fraction, no offset) of a batch's first value."""
        if column.type != "timestamp" or column.name not in frame.columns:
            return None
        first = frame.get_column(column.name).drop_nulls().head(1).to_list()
        separator = first[0].strip(" ")[10:11] if first else ""
        return f"%Y-%m-%d{separator}%H:%M:%S" if separator in (" ", "T") else None

    @staticmethod
    def _quick_valid(column: ColumnSpec, n: pl.Expr, wall_format: str | None) -> pl.Expr | None:
        """A cheap check that never accepts what `_valid` rejects; rows it rejects are
        re-checked by `_valid`. None when `_valid` is already cheap."""
        kind = column.type
        if kind == "integer":
            return (n.str.len_bytes() <= 18) & n.cast(pl.Int64, strict=False).is_not_null()
        if kind == "decimal":
            # A match is ASCII, so its length in bytes is its length in characters.
            return (n.str.len_bytes() <= DECIMAL_MAX_LENGTH) & n.str.contains(_DECIMAL)
        if kind == "date":
            return _canonical(n, n.str.to_date("%Y-%m-%d", strict=False), "%Y-%m-%d")
        if kind == "timestamp" and wall_format is not None:
            return _canonical(n, wall_time(n, wall_format), wall_format)
        return None

    def _valid(self, column: ColumnSpec, n: pl.Expr) -> pl.Expr:
        kind = column.type
        if kind == "integer":
            return self._valid_integer(n)
        if kind == "decimal":
            return self._valid_decimal(n)
        if kind == "boolean":
            return n.str.to_lowercase().is_in(list(BOOLEAN_WORDS))
        if kind == "date":
            return n.str.contains(_DATE_SHAPE) & self._valid_calendar(n)
        if kind == "timestamp":
            return self._valid_timestamp(n)
        return pl.lit(True)

    # -- rules ------------------------------------------------------------------------------

    def _bounds(self, staged: pl.DataFrame) -> pl.DataFrame:
        """min/max failures as columns `__min_<c>` / `__max_<c>`, exact.

        Integers compare in int64, decimals as float64, except the few rows where that might
        not be exact (a float that could round across the bound: long or exponent text near
        it): those are compared as Python decimals, exactly as `numeric` compares them.
        """
        for column in self.source.columns:
            bounds = [
                (r, b) for r, b in (("min", column.min), ("max", column.max)) if b is not None
            ]
            if not bounds:
                continue
            text = f"{NORMALISED}{column.name}"
            n, valid = pl.col(text), pl.col(f"{VALID}{column.name}")
            failed: dict[str, pl.Expr] = {}
            if column.type == "integer":
                t = pl.when(valid).then(n.cast(pl.Int64, strict=False))
                # An integer is below a bound exactly when it is below the bound's ceiling.
                for rule, bound in bounds:
                    failed[rule] = t < math.ceil(bound) if rule == "min" else t > math.floor(bound)
                unsure = valid & t.is_null()
            else:
                f = pl.when(valid).then(n.cast(pl.Float64, strict=False))
                inexact = (n.str.len_chars() > 15) | n.str.contains("[eE]")
                unsure = valid & f.is_null()
                for rule, bound in bounds:
                    failed[rule] = f < bound if rule == "min" else f > bound
                    unsure = unsure | ((f - bound).abs() <= 1e-9 * (1 + abs(bound))) & inexact
            staged = staged.with_columns(
                *(e.alias(f"__{rule}_{column.name}") for rule, e in failed.items()),
                unsure.fill_null(False).alias("__unsure"),
            )
            rows = staged.get_column("__unsure").arg_true()
            if rows.len():
                values = [Decimal(t) for t in staged.get_column(text).gather(rows).to_list()]
                for rule, bound in bounds:
                    limit = Decimal(repr(bound))
                    exact = [v < limit if rule == "min" else v > limit for v in values]
                    name = f"__{rule}_{column.name}"
                    staged = staged.with_columns(
                        staged.get_column(name).scatter(rows, pl.Series(exact, dtype=pl.Boolean))
                    )
            staged = staged.drop("__unsure")
        return staged

    def _failures(self, column: ColumnSpec, staged: pl.DataFrame) -> list[tuple[str, pl.Expr]]:
        """(rule, failed) of one column, in the order of `rule_messages`."""
        n = pl.col(f"{NORMALISED}{column.name}")
        valid_name = f"{VALID}{column.name}"
        valid = pl.col(valid_name) if valid_name in staged.columns else self._valid(column, n)
        failed: dict[str, pl.Expr] = {}
        if column.type != "string":
            failed["type"] = n.is_not_null() & ~valid
        if column.required:
            failed["required"] = n.is_null()
        elif column.name in self.source.primary_key:
            failed["primary_key"] = n.is_null()
        if column.allowed_values is not None:
            failed["allowed_values"] = n.is_not_null() & ~n.is_in(list(column.allowed_values))
        for rule in ("min", "max"):
            if f"__{rule}_{column.name}" in staged.columns:
                failed[rule] = pl.col(f"__{rule}_{column.name}")
        if column.pattern is not None:
            failed["pattern"] = n.is_not_null() & ~n.str.contains(column.pattern)
        return [(rule, failed[rule].fill_null(False)) for rule, _ in self._checks_json[column.name]]

    def _recheck(self, staged: pl.DataFrame) -> pl.DataFrame:
        """Decide the rows a quick check rejected with the full check, on those rows only."""
        checked = [c for c in self.source.columns if f"{VALID}{c.name}" in staged.columns]
        undecided = {
            c.name: pl.col(f"{NORMALISED}{c.name}").is_not_null()
            & ~pl.col(f"{VALID}{c.name}").fill_null(False)
            for c in checked
        }
        if not undecided:
            return staged
        some = staged.select(e.any().alias(name) for name, e in undecided.items()).row(0)
        for column, any_undecided in zip(checked, some, strict=True):
            if not any_undecided:
                continue
            valid_name = f"{VALID}{column.name}"
            n = pl.col(f"{NORMALISED}{column.name}")
            rows = staged.select(undecided[column.name]).to_series().arg_true()
            full = staged.select(n.gather(rows)).select(self._valid(column, n)).to_series()
            staged = staged.with_columns(staged.get_column(valid_name).scatter(rows, full))
        return staged

    # -- one batch ---------------------------------------------------------------------------

    def check(self, frame: pl.DataFrame) -> Checked:
        """Check one batch: raw text columns plus `_file_id` and `_line`."""
        columns = self.source.columns
        formats = {c.name: self._wall_format(frame, c) for c in columns}
        normalised = [self._normalised(frame, c).alias(f"{NORMALISED}{c.name}") for c in columns]
        quick: list[pl.Expr] = []
        walls: list[pl.Expr] = []
        for column in columns:
            n = pl.col(f"{NORMALISED}{column.name}")
            wall_format = formats[column.name]
            if column.name == self.source.event_time and wall_format is not None:
                # Parsed once: the quick check and the event time's wall time.
                wall = wall_time(n, wall_format)
                plain = _canonical(n, wall, wall_format)
                walls.append(pl.when(plain).then(wall).alias(WALL))
                quick.append(pl.col(WALL).is_not_null().alias(f"{VALID}{column.name}"))
                continue
            check = self._quick_valid(column, n, wall_format)
            if check is not None:
                quick.append(check.alias(f"{VALID}{column.name}"))
        staged = (
            frame.lazy().with_columns(normalised).with_columns(walls).with_columns(quick).collect()
        )
        staged = self._bounds(self._recheck(staged))
        failures: list[pl.Expr] = []
        any_failed = pl.lit(False)
        for column in columns:
            by_rule = dict(self._checks_json[column.name])
            for rule, failed in self._failures(column, staged):
                any_failed = any_failed | failed
                failures.append(pl.when(failed).then(pl.lit(by_rule[rule])))
        staged = staged.with_columns(any_failed.alias(BAD))
        bad = staged.filter(pl.col(BAD)) if staged.get_column(BAD).any() else staged.clear()
        quarantine = bad.select(
            pl.lit(self.source.name).alias("source"),
            pl.col(FILE_ID).cast(pl.Int64).alias("file_id"),
            pl.col(LINE).alias("line"),
            pl.struct([self._raw(bad, name).alias(name) for name in self.raw_columns])
            .struct.json_encode()
            .alias("raw_values"),
            pl.concat_str(
                [
                    pl.lit("["),
                    pl.concat_str(failures, separator=",", ignore_nulls=True),
                    pl.lit("]"),
                ]
            ).alias("failures"),
        )
        return Checked(staged, quarantine)
