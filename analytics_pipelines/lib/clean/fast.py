"""The clean stage's rules evaluated in polars over batches of a CSV file's text.

Same language as `validate` (its guarded form): a value passes exactly when the SQL path would
type it, and a failing row gets the same failures (column, rule, message) in the same order.
Passing rows are typed here for a binary COPY (see `binary_copy`): integers, booleans and dates
are exact in polars; decimals keep their text until encoded; timestamps become UTC instants
with offsets PostgreSQL itself gives for the source's zone (see `zone_offsets`), so a value is
stored exactly as the SQL path's casts store it.

Whatever cannot be decided cheaply and exactly here raises `Declined`: the file is then cleaned
by the SQL path, never differently.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import polars as pl
import sqlalchemy as sa

from analytics_pipelines.lib.catalog.models import ColumnSpec, SourceSpec
from analytics_pipelines.lib.clean import binary_copy, validate
from analytics_pipelines.lib.clean.zone_offsets import AmbiguousSlot, ZoneOffsets
from analytics_pipelines.lib.event_time_text import RawEventText
from analytics_pipelines.lib.tables import FILE_ID, LINE

_INTEGER = validate._INTEGER
_DECIMAL = validate._DECIMAL
_EXPONENT_DECIMAL = validate._EXPONENT_DECIMAL
# The digit shapes of validate.TIMESTAMP_SHAPES as one expression.
_DATE_SHAPE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_TIMESTAMP_SHAPE = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?$"
)
_TIMESTAMP_PARTS = (
    r"^(?<day>[0-9]{4}-[0-9]{2}-[0-9]{2})(?:[ T](?<clock>[0-9]{2}:[0-9]{2})"
    r"(?::(?<seconds>[0-9]{2})(?<fraction>\.[0-9]+)?)?(?<offset>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?$"
)
_BIGINT_MAX_DIGITS = str(validate.BIGINT_MAX)
_BIGINT_MIN_DIGITS = str(validate.BIGINT_MIN)[1:]
# Key types whose equality is equality of the normalised text (or of a cheap exact value).
FUSABLE_KEY_TYPES = ("string", "integer", "date", "boolean")
# merge.SLOT_ORIGIN: before it PostgreSQL's date_bin and a floor to 15 minutes may differ.
SLOT_ORIGIN = datetime(2000, 1, 1)


class Declined(Exception):
    """The fast path cannot decide this file exactly; the SQL path cleans it."""


@dataclass
class BatchOutcome:
    good: pl.DataFrame
    quarantine: pl.DataFrame
    rows: int
    ok_rows: int
    failed_rows: int
    landed_rows: int
    # Distinct 15-minute slots (naive, in UTC) of the landed rows' event times.
    slots: pl.Series = field(default_factory=lambda: pl.Series("q", [], pl.Datetime("us")))
    first_date: date | None = None
    last_date: date | None = None


def rule_messages(column: ColumnSpec, source: SourceSpec) -> list[tuple[str, str]]:
    """(rule, message) of every rule of `column`, in the SQL path's order."""
    placeholder: sa.ColumnElement[Any] = sa.literal_column("v")
    return [
        (c.rule, c.message) for c in validate.rule_checks(column, source, placeholder, placeholder)
    ]


def _check_pattern(pattern: str) -> None:
    try:
        pl.select(pl.lit("").str.contains(pattern))
    except Exception as error:  # any compile error: not the same language
        raise Declined(f"pattern {pattern!r} is not supported by the fast path ({error})") from None


class FastValidator:
    """Validates batches of one file: raw text frames in, typed clean rows out."""

    def __init__(
        self,
        source: SourceSpec,
        *,
        file_id: int,
        received: list[str],
        raw_columns: list[str],
        first_line: int,
        zone: ZoneOffsets,
    ) -> None:
        if source.event_time is None:
            raise Declined("a reference source (no event time)")
        if source.reader.encoding not in ("utf-8", "utf-8-sig"):
            raise Declined(f"encoding {source.reader.encoding}")
        for name in source.primary_key:
            if source.column(name).type not in FUSABLE_KEY_TYPES:
                raise Declined(f"primary key column {name} is {source.column(name).type}")
        for column in source.columns:
            if column.pattern is not None:
                _check_pattern(column.pattern)
        self.source = source
        self.file_id = file_id
        self.received = received
        self.raw_columns = raw_columns
        self.next_line = first_line
        self.quote = source.reader.quote
        self.declared = [c.name for c in source.columns]
        columns = [*self.declared, FILE_ID, LINE]
        kinds = [*(c.type for c in source.columns), "integer", "integer"]
        order = binary_copy.stream_order(kinds)
        # The clean COPY's columns, in the order binary_copy encodes fastest.
        self.output_columns = [columns[i] for i in order]
        self.output_kinds = [kinds[i] for i in order]
        self.zone = zone
        self.raw_event_text = RawEventText()
        # Wall times of the last batch when all were naive: their dates are the local dates.
        self._naive_walls: pl.Series | None = None
        self._checks_json = {
            c.name: [
                (rule, json.dumps({"column": c.name, "rule": rule, "message": message}))
                for rule, message in rule_messages(c, source)
            ]
            for c in source.columns
        }

    # -- normalised text and type validity -------------------------------------------------

    def _raw(self, name: str) -> pl.Expr:
        return pl.col(name) if name in self.received else pl.lit(None, dtype=pl.String)

    def _normalised(self, column: ColumnSpec) -> pl.Expr:
        raw = self._raw(column.name)
        if column.type == "string":
            return pl.when(raw == "").then(None).otherwise(raw)
        trimmed = raw.str.strip_chars(" ")
        value = pl.when(trimmed == "").then(None).otherwise(trimmed)
        if column.type == "decimal" and self.source.reader.decimal_separator == ",":
            value = value.str.replace_all(",", ".", literal=True)
        return value

    def _valid_integer(self, n: pl.Expr) -> pl.Expr:
        # Up to 18 characters a value cannot overflow, and polars' integer parser accepts
        # exactly the SQL path's language (optional sign, ASCII digits): no regex needed.
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
        return (n.str.len_chars() <= validate.DECIMAL_MAX_LENGTH) & (
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
        offset_hour = n.str.slice(10).str.extract(r"[+-]([0-9]{2})", 1)
        offset_ok = offset_hour.is_null() | (offset_hour <= "15")
        timed = n.str.len_chars() > 10
        return (
            n.str.contains(_TIMESTAMP_SHAPE)
            & self._valid_calendar(n)
            & (~timed | (clock & offset_ok))
        )

    def _wall_format(self, frame: pl.DataFrame, column: ColumnSpec) -> str | None:
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
            return (n.str.len_bytes() <= validate.DECIMAL_MAX_LENGTH) & n.str.contains(_DECIMAL)
        if kind == "date":
            # Parsing then printing back the same text proves the digit shape and the calendar.
            day = n.str.to_date("%Y-%m-%d", strict=False)
            return (day.dt.strftime("%Y-%m-%d") == n) & (day.dt.year() >= 1)
        if kind == "timestamp" and wall_format is not None:
            wall = FastValidator._wall(n, wall_format)
            return (wall.dt.strftime(wall_format) == n) & (wall.dt.year() >= 1)
        return None

    @staticmethod
    def _wall(n: pl.Expr, wall_format: str) -> pl.Expr:
        # Event times are nearly all distinct: polars' per-value parse cache only costs.
        return n.str.to_datetime(wall_format, time_unit="us", strict=False, cache=False)

    def _valid(self, column: ColumnSpec, n: pl.Expr) -> pl.Expr:
        kind = column.type
        if kind == "integer":
            return self._valid_integer(n)
        if kind == "decimal":
            return self._valid_decimal(n)
        if kind == "boolean":
            return n.str.to_lowercase().is_in(list(validate.BOOLEAN_WORDS))
        if kind == "date":
            return n.str.contains(_DATE_SHAPE) & self._valid_calendar(n)
        if kind == "timestamp":
            return self._valid_timestamp(n)
        return pl.lit(True)

    # -- rules ------------------------------------------------------------------------------

    def _bound_checks(
        self, column: ColumnSpec, n: pl.Expr, valid: pl.Expr
    ) -> tuple[dict[str, pl.Expr], pl.Expr]:
        """min/max failures, exact; and rows where a float comparison might not be."""
        failed: dict[str, pl.Expr] = {}
        uncertain = pl.lit(False)
        if column.min is None and column.max is None:
            return failed, uncertain
        if column.type == "integer":
            t = pl.when(valid).then(n.cast(pl.Int64, strict=False))
            # An integer is below a bound exactly when it is below the bound's ceiling.
            if column.min is not None:
                failed["min"] = t < math.ceil(column.min)
            if column.max is not None:
                failed["max"] = t > math.floor(column.max)
            uncertain = valid & t.is_null()
            return failed, uncertain
        f = pl.when(valid).then(n.cast(pl.Float64, strict=False))
        uncertain = valid & f.is_null()
        inexact = (n.str.len_chars() > 15) | n.str.contains("[eE]")
        for rule, bound in (("min", column.min), ("max", column.max)):
            if bound is None:
                continue
            failed[rule] = f < bound if rule == "min" else f > bound
            near = (f - bound).abs() <= 1e-9 * (1 + abs(bound))
            uncertain = uncertain | (near & inexact)
        return failed, uncertain

    def _column_failures(
        self, column: ColumnSpec, n: pl.Expr, valid: pl.Expr
    ) -> tuple[list[tuple[str, pl.Expr]], pl.Expr, pl.Expr]:
        """(rule, failed) in the SQL order, the type validity, and the uncertain rows."""
        bounds, uncertain = self._bound_checks(column, n, valid)
        failed: dict[str, pl.Expr] = {}
        if column.type != "string":
            failed["type"] = n.is_not_null() & ~valid
        if column.required:
            failed["required"] = n.is_null()
        elif column.name in self.source.primary_key:
            failed["primary_key"] = n.is_null()
        if column.allowed_values is not None:
            failed["allowed_values"] = n.is_not_null() & ~n.is_in(list(column.allowed_values))
        failed.update(bounds)
        if column.pattern is not None:
            failed["pattern"] = n.is_not_null() & ~n.str.contains(column.pattern)
        ordered = [
            (rule, failed[rule].fill_null(False)) for rule, _ in self._checks_json[column.name]
        ]
        return ordered, valid, uncertain

    # -- event time -------------------------------------------------------------------------

    def _instants(self, frame: pl.DataFrame, name: str) -> pl.Series:
        """The UTC instant (naive, in UTC) of each value of a date or timestamp column, as
        PostgreSQL reads it."""
        text = frame.lazy().select(pl.col(name).alias("n"))
        if self.source.column(name).type == "date":
            wall = pl.col("n").str.to_datetime("%Y-%m-%d", time_unit="us", strict=False)
            return self._localise(text.select(wall.alias("w")).collect().to_series())
        simple = self._simple_walls(frame.get_column(name))
        if name == self.source.event_column:
            self._naive_walls = simple
        if simple is not None:
            return self._localise(simple)
        parts = text.select(pl.col("n").str.extract_groups(_TIMESTAMP_PARTS)).unnest("n").collect()
        if parts.select((pl.col("fraction").str.len_chars() > 7).any()).item():
            raise Declined("timestamps with more than microsecond precision")
        wall = pl.concat_str(
            pl.col("day"),
            pl.lit(" "),
            pl.col("clock").fill_null("00:00"),
            pl.lit(":"),
            pl.col("seconds").fill_null("00"),
            pl.col("fraction").fill_null(""),
        ).str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us", strict=False, cache=False)
        digits = pl.col("offset").str.replace_all(r"[^0-9]", "")
        hours = digits.str.slice(0, 2).cast(pl.Int64, strict=False).fill_null(0)
        minutes = digits.str.slice(2, 2).cast(pl.Int64, strict=False).fill_null(0)
        if parts.select((minutes > 59).any()).item():
            raise Declined("a UTC offset with minutes above 59")
        sign = pl.when(pl.col("offset").str.starts_with("-")).then(-1).otherwise(1)
        shift = pl.duration(seconds=sign * (hours * 3600 + minutes * 60))
        walls = parts.select(wall=wall, shifted=wall - shift, naive=pl.col("offset").is_null())
        local = self._localise(walls.get_column("wall").filter(walls.get_column("naive")))
        naive = walls.get_column("naive").fill_null(False)
        instants = walls.get_column("shifted").scatter(naive.arg_true(), local)
        return instants.alias("t")

    @staticmethod
    def _simple_walls(n: pl.Series) -> pl.Series | None:
        """Wall times when every value is naive with whole seconds (the common case, parsed
        without regular expressions); None otherwise."""
        frame = pl.DataFrame({"n": n}).with_columns(size=pl.col("n").str.len_bytes())
        if not frame.select(pl.col("size").is_in([19]) | pl.col("n").is_null()).to_series().all():
            return None
        wall = (
            pl.col("n")
            .str.replace("T", " ", literal=True)
            .str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", strict=False, cache=False)
        )
        return frame.select(wall.alias("w")).to_series()

    def _localise(self, wall: pl.Series) -> pl.Series:
        """Wall times of the source's zone → UTC (naive), exactly as PostgreSQL reads them."""
        try:
            return self.zone.to_utc(wall)
        except AmbiguousSlot as error:
            raise Declined(str(error)) from None

    def _local_days(self, instants: pl.Series) -> pl.Series:
        """The source-zone date of UTC instants (zone lookups on distinct slots only)."""
        frame = pl.DataFrame({"t": instants}).with_columns(q=pl.col("t").dt.truncate("15m"))
        slots = frame.select(pl.col("q").unique().drop_nulls())
        local = (
            pl.col("q")
            .dt.replace_time_zone("UTC")
            .dt.convert_time_zone(self.source.timezone)
            .dt.replace_time_zone(None)
        )
        offsets = slots.with_columns(offset=local - pl.col("q"))
        joined = frame.join(offsets, on="q", how="left", maintain_order="left")
        return joined.select((pl.col("t") + pl.col("offset")).dt.date().alias("d")).to_series()

    def _dates_and_slots(
        self, good: pl.DataFrame, instants: pl.Series, landed: pl.Series
    ) -> tuple[date | None, date | None, pl.Series]:
        event = self.source.event_column
        if good.height == 0:
            return None, None, pl.Series("q", [], pl.Datetime("us"))
        present = good.get_column(event).is_not_null()
        if (instants.is_null() & present).any():
            raise Declined("an event time the fast path cannot place in time")
        if self.source.column(event).type == "date":
            days = good.get_column(event).str.to_date("%Y-%m-%d", strict=False)
            low, high = days.min(), days.max()
        elif self._naive_walls is not None:
            # A naive wall time keeps its date whichever offset PostgreSQL picks for it.
            earliest, latest = self._naive_walls.min(), self._naive_walls.max()
            low = earliest.date() if isinstance(earliest, datetime) else None
            high = latest.date() if isinstance(latest, datetime) else None
        else:
            days = self._local_days(instants)
            low, high = days.min(), days.max()
        landed = landed.drop_nulls()
        if landed.len() and landed.min() < SLOT_ORIGIN:  # type: ignore[operator]
            raise Declined("event times before 2000-01-01")
        slots = landed.dt.truncate("15m").unique().alias("q")
        return low, high, slots  # type: ignore[return-value]

    # -- one batch ---------------------------------------------------------------------------

    def validate(self, frame: pl.DataFrame) -> BatchOutcome:
        """Validate one batch of raw rows (columns named as received, all strings)."""
        frame = frame.with_row_index("__i").with_columns(
            (pl.col("__i").cast(pl.Int64) + self.next_line).alias(LINE)
        )
        self.next_line += frame.height
        formats = {c.name: self._wall_format(frame, c) for c in self.source.columns}
        normalised = [self._normalised(c).alias(f"__n_{c.name}") for c in self.source.columns]
        quick: list[pl.Expr] = []
        walls: list[pl.Expr] = []
        for column in self.source.columns:
            n = pl.col(f"__n_{column.name}")
            wall_format = formats[column.name]
            if column.name == self.source.event_column and wall_format is not None:
                # Parsed once: the quick check and the event time's wall time.
                wall = self._wall(n, wall_format)
                plain = (wall.dt.strftime(wall_format) == n) & (wall.dt.year() >= 1)
                walls.append(pl.when(plain).then(wall).alias("__w"))
                quick.append(pl.col("__w").is_not_null().alias(f"__v_{column.name}"))
                continue
            check = self._quick_valid(column, n, wall_format)
            if check is not None:
                quick.append(check.alias(f"__v_{column.name}"))
        staged = (
            frame.lazy().with_columns(normalised).with_columns(walls).with_columns(quick).collect()
        )
        staged = self._recheck(staged)
        event = self.source.event_column
        # "__w" holds the event times that round-trip through the plain wall format.
        received_plain = (
            pl.col("__w").is_not_null() & (pl.col(event) == pl.col(f"__n_{event}"))
            if "__w" in staged.columns
            else None
        )
        self.raw_event_text.add(staged, event, received_plain)
        failures: list[pl.Expr] = []
        uncertain = pl.lit(False)
        any_failed = pl.lit(False)
        for column in self.source.columns:
            n = pl.col(f"__n_{column.name}")
            valid_name = f"__v_{column.name}"
            valid = pl.col(valid_name) if valid_name in staged.columns else self._valid(column, n)
            checks, _, unsure = self._column_failures(column, n, valid)
            uncertain = uncertain | unsure
            by_rule = dict(self._checks_json[column.name])
            for rule, failed in checks:
                any_failed = any_failed | failed
                failures.append(pl.when(failed).then(pl.lit(by_rule[rule])))
        staged = staged.with_columns(__bad=any_failed, __unsure=uncertain.fill_null(False))
        if staged.get_column("__unsure").any():
            raise Declined("a min/max comparison the fast path cannot decide exactly")
        clean_batch = not staged.get_column("__bad").any()
        bad = staged.clear() if clean_batch else staged.filter(pl.col("__bad"))
        quarantine = bad.select(
            pl.lit(self.source.name).alias("source"),
            pl.lit(self.file_id).alias("file_id"),
            pl.col(LINE).alias("line"),
            pl.struct([self._raw(name).alias(name) for name in self.raw_columns])
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
        good = (staged if clean_batch else staged.filter(~pl.col("__bad"))).select(
            *(pl.col(f"__n_{name}").alias(name) for name in self.declared),
            pl.lit(self.file_id).alias(FILE_ID),
            pl.col(LINE),
            *([pl.col("__w")] if "__w" in staged.columns else []),
        )
        self._naive_walls = None
        if not good.height:
            instants = pl.Series("t", [], pl.Datetime("us"))
        elif "__w" in good.columns and (
            good.get_column("__w").null_count()
            == good.get_column(self.source.event_column).null_count()
        ):
            # Every event time is a plain wall time already parsed by the checks.
            self._naive_walls = good.get_column("__w")
            instants = self._localise(self._naive_walls)
        else:
            instants = self._instants(good, self.source.event_column)
        keyed = good.with_columns(*self._key_exprs(), __t=instants)
        keys = [f"__k_{k}" for k in self.source.primary_key]
        # Distinct hashes prove distinct keys; hashing is far cheaper than de-duplicating.
        distinct = keyed.select(pl.struct(keys).hash().n_unique()).item() == keyed.height
        landed = keyed if distinct else keyed.unique(subset=keys, keep="last", maintain_order=True)
        first, last, slots = self._dates_and_slots(good, instants, landed.get_column("__t"))
        landed = self._typed(landed)
        return BatchOutcome(
            good=landed,
            quarantine=quarantine,
            rows=frame.height,
            ok_rows=good.height,
            failed_rows=bad.height,
            landed_rows=landed.height,
            slots=slots,
            first_date=first,
            last_date=last,
        )

    def _recheck(self, staged: pl.DataFrame) -> pl.DataFrame:
        """Decide the rows a quick check rejected with the full check, on those rows only."""
        checked = [c for c in self.source.columns if f"__v_{c.name}" in staged.columns]
        undecided = {
            c.name: pl.col(f"__n_{c.name}").is_not_null()
            & ~pl.col(f"__v_{c.name}").fill_null(False)
            for c in checked
        }
        if not undecided:
            return staged
        some = staged.select(e.any().alias(name) for name, e in undecided.items()).row(0)
        for column, any_undecided in zip(checked, some, strict=True):
            if not any_undecided:
                continue
            valid_name = f"__v_{column.name}"
            n = pl.col(f"__n_{column.name}")
            rows = staged.select(undecided[column.name]).to_series().arg_true()
            subset = staged.select(n.gather(rows))
            full = subset.select(self._valid(column, n)).to_series()
            rechecked = staged.get_column(valid_name).scatter(rows, full)
            staged = staged.with_columns(rechecked.alias(valid_name))
        return staged

    def _typed(self, landed: pl.DataFrame) -> pl.DataFrame:
        """The landed rows as typed values for binary COPY (types as in `binary_copy`)."""
        typed: list[pl.Expr | pl.Series] = []
        for column in self.source.columns:
            if column.type == "timestamp":
                instants = (
                    landed.get_column("__t")
                    if column.name == self.source.event_column
                    else self._instants(landed, column.name)
                )
                typed.append(instants.alias(column.name))
            else:
                typed.append(_typed_value(pl.col(column.name), column.type))
        result = landed.select(*typed, pl.col(FILE_ID).cast(pl.Int64), pl.col(LINE)).select(
            self.output_columns
        )
        text_nulls = landed.select(self.declared).null_count().row(0)
        typed_nulls = result.select(self.declared).null_count().row(0)
        for name, before, after in zip(self.declared, text_nulls, typed_nulls, strict=True):
            if before != after:
                raise Declined(f"a valid {name} value the fast path could not type")
        return result

    def _key_exprs(self) -> list[pl.Expr]:
        """Key columns as their typed values compare: canonical forms where spellings differ."""
        keys: list[pl.Expr] = []
        for name in self.source.primary_key:
            kind = self.source.column(name).type
            keys.append(_typed_value(pl.col(name), kind).alias(f"__k_{name}"))
        return keys


def _typed_value(text: pl.Expr, kind: str) -> pl.Expr:
    """A validated, normalised text value as its polars type (timestamps are done apart:
    they need the zone); strings and decimals stay text."""
    if kind == "integer":
        return text.cast(pl.Int64, strict=False)
    if kind == "boolean":
        return text.str.to_lowercase().replace_strict(
            validate.BOOLEAN_WORDS, default=None, return_dtype=pl.Boolean
        )
    if kind == "date":
        return text.str.to_date("%Y-%m-%d", strict=False)
    return text
