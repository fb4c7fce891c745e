"""Catalog models: what a source and a KPI declare (validated by pydantic when definitions load)."""

from __future__ import annotations

import re
import zoneinfo
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from analytics_pipelines.lib.catalog.cron import is_valid_cron

ColumnType = Literal["string", "integer", "decimal", "boolean", "date", "timestamp"]
FileFormat = Literal["csv", "jsonl", "parquet", "xlsx"]
Grain = Literal["hour", "day", "week", "month", "quarter", "year"]
GRAIN_ORDER: tuple[Grain, ...] = ("hour", "day", "week", "month", "quarter", "year")

# What Python's `re` accepts but the clean stage's engine (polars: Rust regex) refuses, found at
# catalog load rather than at the first delivery: look-around, atomic groups, conditionals and
# back-references. Escapes are matched as one token each, so `\(?=` stays a literal.
_REGEX_TOKENS = re.compile(r"\\(?:[1-9]|g<)|\\.|\(\?(?:<?[=!]|>|P=|\()")


def _unsupported_regex(pattern: str) -> str | None:
    for token in _REGEX_TOKENS.finditer(pattern):
        text = token.group(0)
        if not text.startswith("\\") or text[1] in "123456789g":
            return text
    return None


# Names become PostgreSQL identifiers (quoted anyway) and Dagster asset keys.
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
# A KPI dimension: a column of its source, or `lookup.column` of a reference joined to it.
DimensionName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}(\.[a-z][a-z0-9_]{0,62})?$")]
SourceKind = Literal["events", "reference"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReaderOptions(_Strict):
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote: str = Field(default='"', min_length=1, max_length=1)
    encoding: Literal["utf-8", "utf-8-sig", "latin-1", "cp1252"] = "utf-8"
    header_row: int = Field(default=1, ge=1, description="1-based row holding the column names")
    decimal_separator: Literal[".", ","] = "."
    sheet: str | None = Field(
        default=None, description="xlsx: sheet name (default: the first sheet)"
    )
    compression: Literal["auto", "none", "gzip"] = "auto"


class ColumnSpec(_Strict):
    name: Name
    type: ColumnType = "string"
    required: bool = False
    allowed_values: list[str] | None = None
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    description: str | None = None

    @field_validator("pattern")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"pattern is not a valid regular expression: {error}") from None
            unsupported = _unsupported_regex(value)
            if unsupported:
                raise ValueError(
                    f"pattern uses {unsupported!r} (look-around, back-reference, atomic"
                    " group or conditional), which the clean stage's regular expressions (Rust"
                    " syntax, lib/clean/rules.py) do not support"
                )
        return value

    @model_validator(mode="after")
    def _bounds(self) -> ColumnSpec:
        if (self.min is not None or self.max is not None) and self.type not in (
            "integer",
            "decimal",
        ):
            raise ValueError(f"min/max need a numeric column, {self.name!r} is {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


def _check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)"
        ) from None
    return value


class LookupSpec(_Strict):
    """Dimensions from a reference source, joined on `key` (fact column -> reference key column)."""

    name: Name
    source: Name
    key: dict[Name, Name] = Field(min_length=1)


class SourceSpec(_Strict):
    name: Name
    # A reference (customers, products) has no event time: the newest version of each key wins
    # and KPIs of other sources look its columns up (`lookups`).
    kind: SourceKind = "events"
    value_chain: Name
    description: str = ""
    landing_prefix: str = Field(min_length=1)
    format: FileFormat
    reader: ReaderOptions = ReaderOptions()
    columns: list[ColumnSpec] = Field(min_length=1)
    primary_key: list[str] = Field(min_length=1)
    event_time: str | None = None
    timezone: str = "UTC"
    lookups: list[LookupSpec] = []
    max_quarantine_rate: float = Field(default=0.05, ge=0, le=1)
    freshness_hours: float | None = Field(default=None, gt=0)
    raw_retention_days: int | None = Field(default=None, ge=1)

    _tz = field_validator("timezone")(_check_timezone)

    @field_validator("landing_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value or ".." in value.split("/"):
            raise ValueError("landing_prefix must be a relative folder such as landing/orders")
        return value + "/"

    @model_validator(mode="after")
    def _references(self) -> SourceSpec:
        names = [c.name for c in self.columns]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"columns declared twice: {', '.join(duplicated)}")
        unknown = [c for c in self.primary_key if c not in names]
        if unknown:
            raise ValueError(f"primary_key names undeclared columns: {', '.join(unknown)}")
        if self.kind == "reference":
            self._check_reference()
        elif self.event_time is None:
            raise ValueError(
                "event_time is required (the column that places a row in business time); "
                "a source without one is declared with kind: reference"
            )
        elif self.event_time not in names:
            raise ValueError(f"event_time {self.event_time!r} is not a declared column")
        elif self.column(self.event_time).type not in ("date", "timestamp"):
            raise ValueError(f"event_time {self.event_time!r} must be a date or timestamp column")
        lookup_names = [lookup.name for lookup in self.lookups]
        twice = sorted({n for n in lookup_names if lookup_names.count(n) > 1})
        if twice:
            raise ValueError(f"lookups declared twice: {', '.join(twice)}")
        for lookup in self.lookups:
            missing = [c for c in lookup.key if c not in names]
            if missing:
                raise ValueError(
                    f"lookup {lookup.name}: key names undeclared columns: {', '.join(missing)}"
                )
        return self

    def _check_reference(self) -> None:
        # Refused rather than ignored: a reference row is never placed in time, and a silently
        # ignored setting would promise periods, archives or retention that never happen.
        refused = {
            "event_time": "a reference has no event time: the newest version of each key wins",
            "raw_retention_days": "a reference is not archived by date, so its raw rows stay",
            "lookups": "a reference is looked up by events sources; it looks nothing up itself",
        }
        for setting, reason in refused.items():
            if getattr(self, setting):
                raise ValueError(f"{setting}: not allowed on a reference source ({reason})")

    @property
    def event_column(self) -> str:
        """The event-time column; only events sources have one."""
        if self.event_time is None:
            raise ValueError(f"source {self.name} is a reference: it has no event time")
        return self.event_time

    def column(self, name: str) -> ColumnSpec:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @property
    def column_types(self) -> dict[str, ColumnType]:
        return {c.name: c.type for c in self.columns}


TargetDirection = Literal["higher", "lower"]


class TargetSpec(_Strict):
    """What value of a KPI is good: at least (`higher`) or at most (`lower`) the target.

    `value` applies to every grain, `by_grain` overrides it per grain (a monthly revenue target
    is not a daily one); a grain with neither has no target. By default only the total (`{}`
    dimensions) is compared: a company target usually does not hold for each region of a sum.
    `applies_to: every_cell` compares every breakdown cell too (rates, averages). Numbers are
    decimals; NaN and infinity are refused by the field type.
    """

    direction: TargetDirection
    value: Decimal | None = None
    by_grain: dict[Grain, Decimal] = {}
    applies_to: Literal["total", "every_cell"] = "total"

    @model_validator(mode="after")
    def _some_value(self) -> TargetSpec:
        if self.value is None and not self.by_grain:
            raise ValueError("a target needs a value, or by_grain values (e.g. {month: 30000})")
        return self

    def for_grain(self, grain: Grain) -> Decimal | None:
        return self.by_grain.get(grain, self.value)


class SemiAdditive(_Strict):
    """A balance-like measure: per entity, the row at the latest (or earliest) event time of
    each period; the measure then aggregates those rows across the dimensions."""

    take: Literal["last", "first"]
    # The columns that identify what is measured (a stock: warehouse and product). None: the
    # primary key without the event time, which fits a snapshot source keyed by entity and time.
    per: list[Name] | None = None

    @field_validator("per")
    @classmethod
    def _per_once(cls, value: list[str] | None) -> list[str] | None:
        twice = sorted({n for n in value or [] if (value or []).count(n) > 1})
        if twice:
            raise ValueError(f"per names {', '.join(twice)} more than once")
        return value


ToDate = Literal["month", "quarter", "year", "all"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[Weekday, ...] = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)


class WindowSpec(_Strict):
    """A KPI whose value at each local day aggregates the rows of a window of days ending there
    (lib/kpi/windows.py): the trailing `rolling` days, or the month, quarter or year to date
    (`all`: every day up to it)."""

    rolling: int | None = Field(default=None, ge=2, le=366, description="days, the day included")
    to_date: ToDate | None = None

    @model_validator(mode="after")
    def _one_window(self) -> WindowSpec:
        if (self.rolling is None) == (self.to_date is None):
            raise ValueError(
                "declare exactly one of rolling (days, e.g. {rolling: 28}) or to_date "
                "(month, quarter, year or all)"
            )
        return self

    def describe(self) -> str:
        if self.rolling is not None:
            return f"rolling {self.rolling} days"
        return "all days to date" if self.to_date == "all" else f"{self.to_date} to date"


AnomalySensitivity = Literal["low", "medium", "high"]
# The prediction interval a value must leave to be anomalous: a more sensitive setting uses a
# narrower interval and so flags more values.
SENSITIVITY_LEVELS: dict[AnomalySensitivity, float] = {"low": 99.9, "medium": 99.0, "high": 95.0}


class ForecastSpec(_Strict):
    """Forecast the KPI's day values (per dimension value and the total) `horizon_days` ahead,
    with 80 % and 95 % prediction intervals (lib/ml/forecast.py)."""

    horizon_days: int = Field(default=28, ge=1, le=366)


class AnomalySpec(_Strict):
    """Judge each day value against a model fitted on the days before it (lib/ml/anomalies.py).

    `sensitivity` names the prediction interval a value must leave: low 99.9 %, medium 99 %,
    high 95 %; `level` sets the interval directly instead."""

    sensitivity: AnomalySensitivity = "medium"
    level: float | None = Field(default=None, gt=50, lt=100)

    @model_validator(mode="after")
    def _one_setting(self) -> AnomalySpec:
        if self.level is not None and "sensitivity" in self.model_fields_set:
            raise ValueError(
                "declare sensitivity (low, medium, high) or level (a percentage), not both"
            )
        return self

    @property
    def interval_level(self) -> float:
        return self.level if self.level is not None else SENSITIVITY_LEVELS[self.sensitivity]


class MlDefaults(_Strict):
    """Catalog-wide defaults (`defaults:` beside `kpis:` in one KPI file): every KPI with a day
    grain that declares no `forecast` / `anomalies` of its own gets these (`null` opts out)."""

    forecast: ForecastSpec | None = None
    anomalies: AnomalySpec | None = None


class KpiSpec(_Strict):
    name: Name
    value_chain: Name
    description: str = Field(min_length=1)
    unit: str = ""
    # The source a measure aggregates; a derived KPI takes its inputs' sources (optional there).
    source: Name | None = None
    measure: str | None = None
    derived: str | None = Field(
        default=None, description="arithmetic over other KPIs, of any source"
    )
    filter: str | None = None
    semi_additive: SemiAdditive | None = None
    window: WindowSpec | None = None  # rolling or to-date values per day (lib/kpi/windows.py)
    # Fiscal calendar (lib/kpi/periods.py Calendar): quarters and years start in this month,
    # weeks on this weekday; labels say FY2026 Q1 (a fiscal year is named by the year it ends).
    fiscal_year_start_month: int = Field(default=1, ge=1, le=12)
    week_start: Weekday = "monday"
    # What a sum over no matching row is (a count is 0 anyway); null keeps it NULL.
    fill_nulls_with: Decimal | None = Decimal(0)
    dimensions: list[DimensionName] = []
    grains: list[Grain] = Field(default_factory=lambda: list[Grain](["day"]), min_length=1)
    timezone: str = "UTC"
    refresh_cron: str = "0 * * * *"
    freshness_hours: float | None = Field(default=None, gt=0)
    target: TargetSpec | None = None
    # Machine learning on the day values (lib/ml); an explicit `null` opts out of a catalog-wide
    # default (lib/catalog/loader.py applies defaults to fields the KPI does not set).
    forecast: ForecastSpec | None = None
    anomalies: AnomalySpec | None = None

    _tz = field_validator("timezone")(_check_timezone)

    @field_validator("refresh_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not is_valid_cron(value):
            raise ValueError(
                f"refresh_cron {value!r} is not a valid cron expression "
                "(five fields: minute hour day-of-month month day-of-week, or @daily / @hourly …)"
            )
        return value

    @field_validator("grains")
    @classmethod
    def _grains(cls, value: list[Grain]) -> list[Grain]:
        return sorted(set(value), key=GRAIN_ORDER.index)

    @model_validator(mode="after")
    def _one_kind(self) -> KpiSpec:
        if (self.measure is None) == (self.derived is None):
            raise ValueError("declare exactly one of measure or derived")
        if self.measure is not None and self.source is None:
            raise ValueError(
                "a measure KPI needs source: the source whose clean rows it aggregates"
            )
        if self.derived is not None and self.filter is not None:
            raise ValueError(
                "a derived KPI takes the filters of the KPIs it combines; remove filter"
            )
        return self

    @model_validator(mode="after")
    def _target_grains(self) -> KpiSpec:
        if self.target is not None:
            unknown = [g for g in self.target.by_grain if g not in self.grains]
            if unknown:
                raise ValueError(
                    f"target by_grain names grains the KPI is not computed per: "
                    f"{', '.join(unknown)} (grains: {', '.join(self.grains)})"
                )
        return self

    @model_validator(mode="after")
    def _semi_additive_measure(self) -> KpiSpec:
        if self.semi_additive is not None and self.derived is not None:
            raise ValueError(
                "semi_additive applies to a measure; a derived KPI combines stored values "
                "(declare semi_additive on the KPIs it combines)"
            )
        return self


class SourceFile(_Strict):
    sources: list[SourceSpec]


class KpiFile(_Strict):
    kpis: list[KpiSpec]
    # Catalog-wide: may be declared in one KPI file only (lib/catalog/loader.py applies them).
    defaults: MlDefaults | None = None
