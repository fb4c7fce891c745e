"""Calendar periods of the KPI grains in a KPI's time zone, in Python and as SQL expressions.

Python decides *which* local dates a refresh covers; PostgreSQL decides *where* they start and end
(`date_trunc(grain, ts, tz)` and `timezone(tz, local_timestamp)`), so daylight-saving rules are
applied in one place only: the database's time zone data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from analytics_pipelines.lib.catalog.models import (
    GRAIN_ORDER,
    WEEKDAYS,
    Grain,
    KpiSpec,
    WindowSpec,
)

__all__ = [
    "GRAIN_ORDER",
    "contiguous_ranges",
    "covering_window",
    "local_date",
    "local_midnight_sql",
    "period_start_sql",
]


def _next_month(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class Calendar:
    """Where weeks, quarters and years start: ISO weeks and calendar years by default, or a
    fiscal year starting in another month (quarters follow it) and weeks on another weekday."""

    fiscal_year_start_month: int = 1
    week_start: int = 0  # 0 is Monday, like date.weekday()

    @classmethod
    def of(cls, kpi: KpiSpec) -> Calendar:
        return cls(kpi.fiscal_year_start_month, WEEKDAYS.index(kpi.week_start))

    def shift(self, grain: Grain) -> tuple[int, int]:
        """(months, days) this calendar's periods of `grain` start after the standard ones."""
        if grain == "week":
            return 0, self.week_start
        if grain == "quarter":
            return (self.fiscal_year_start_month - 1) % 3, 0
        if grain == "year":
            return self.fiscal_year_start_month - 1, 0
        return 0, 0


STANDARD = Calendar()


def period_start(grain: Grain, day: dt.date, calendar: Calendar = STANDARD) -> dt.date:
    """First local date of the period of `grain` containing `day` (hour and day: the day itself)."""
    months, days = calendar.shift(grain)
    if grain in ("hour", "day"):
        return day
    if grain == "week":  # Monday unless the calendar says otherwise, like date_trunc('week')
        return day - dt.timedelta(days=(day.weekday() - days) % 7)
    if grain == "month":
        return day.replace(day=1)
    # A fiscal quarter or year is the standard one of the date `months` earlier, moved on.
    shifted = _next_month(day.replace(day=1), -months)
    if grain == "quarter":
        start = dt.date(shifted.year, (shifted.month - 1) // 3 * 3 + 1, 1)
    else:
        start = dt.date(shifted.year, 1, 1)
    return _next_month(start, months)


def period_after(grain: Grain, day: dt.date, calendar: Calendar = STANDARD) -> dt.date:
    """First local date after the period of `grain` containing `day`."""
    start = period_start(grain, day, calendar)
    if grain in ("hour", "day"):
        return start + dt.timedelta(days=1)
    if grain == "week":
        return start + dt.timedelta(days=7)
    return _next_month(start, {"month": 1, "quarter": 3}.get(grain, 12))


def covering_window(
    grain: Grain, first_day: dt.date, last_day: dt.date, calendar: Calendar = STANDARD
) -> tuple[dt.date, dt.date]:
    """Local dates [start, end) of every period of `grain` that contains a day of the range.

    Refreshing 2026-03-29 at month grain covers [2026-03-01, 2026-04-01): the whole month is
    recomputed from clean rows, because distinct counts and averages do not add up from days.
    """
    if last_day < first_day:
        raise ValueError(f"empty date range {first_day}..{last_day}")
    return period_start(grain, first_day, calendar), period_after(grain, last_day, calendar)


def window_first_day(
    window: WindowSpec, day: dt.date, calendar: Calendar = STANDARD
) -> dt.date | None:
    """First local date whose rows count in the window of `day` (None: no bound, `all`)."""
    if window.rolling is not None:
        return day - dt.timedelta(days=window.rolling - 1)
    if window.to_date == "all":
        return None
    assert window.to_date is not None
    return period_start(window.to_date, day, calendar)


def window_last_day(
    window: WindowSpec, day: dt.date, calendar: Calendar = STANDARD
) -> dt.date | None:
    """Last local date whose window contains `day` (None: every later day, `all`).

    A row of `day` changes the values of the days `day` .. this one: the next N-1 days of a
    rolling window, the rest of the month, quarter or year of a to-date total.
    """
    if window.rolling is not None:
        return day + dt.timedelta(days=window.rolling - 1)
    if window.to_date == "all":
        return None
    assert window.to_date is not None
    return period_after(window.to_date, day, calendar) - dt.timedelta(days=1)


def local_date(moment: dt.datetime, timezone: str) -> dt.date:
    """The calendar date of an aware moment in `timezone`."""
    if moment.tzinfo is None:
        raise ValueError("expected an aware datetime")
    return moment.astimezone(ZoneInfo(timezone)).date()


def contiguous_ranges(days: Iterable[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Collapse dates into sorted inclusive ranges of consecutive days."""
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in sorted(set(days)):
        if ranges and ranges[-1][1] + dt.timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def local_midnight_sql(day: dt.date, timezone: str) -> sa.ColumnElement[Any]:
    """SQL for the instant the local `day` starts in `timezone` (a timestamptz)."""
    return sa.func.timezone(
        sa.literal(timezone, sa.Text()),
        sa.cast(sa.literal(day, sa.Date()), sa.DateTime(timezone=False)),
        type_=sa.DateTime(timezone=True),
    )


def truncated_sql(
    grain: Grain, local: sa.ColumnElement[Any], calendar: Calendar = STANDARD
) -> sa.ColumnElement[Any]:
    """SQL for the local start (a timestamp) of the `grain` period containing the local
    timestamp `local`: date_trunc, moved by the calendar's shift (a fiscal quarter starting in
    April is the standard quarter of the date 3 months earlier, 3 months on)."""
    months, days = calendar.shift(grain)
    if not months and not days:
        return sa.func.date_trunc(sa.literal(grain, sa.Text()), local, type_=sa.DateTime())
    step = sa.cast(
        sa.literal(f"{months} months" if months else f"{days} days", sa.Text()), sa.Interval()
    )
    truncated = sa.func.date_trunc(sa.literal(grain, sa.Text()), local - step, type_=sa.DateTime())
    return truncated + step


def period_start_sql(
    grain: Grain, moment: sa.ColumnElement[Any], timezone: str, calendar: Calendar = STANDARD
) -> sa.ColumnElement[Any]:
    """SQL for the start (timestamptz) of the `grain` period containing `moment` in `timezone`.

    The three-argument date_trunc keeps the UTC offset for hours, so the two 02:00 hours of an
    autumn day stay apart, and re-resolves it for days and coarser grains. A shifted (fiscal)
    period is truncated in local time and converted back.
    """
    if calendar.shift(grain) != (0, 0):
        tz = sa.literal(timezone, sa.Text())
        local = sa.func.timezone(tz, moment, type_=sa.DateTime())
        return sa.func.timezone(
            tz, truncated_sql(grain, local, calendar), type_=sa.DateTime(timezone=True)
        )
    return sa.func.date_trunc(
        sa.literal(grain, sa.Text()),
        moment,
        sa.literal(timezone, sa.Text()),
        type_=sa.DateTime(timezone=True),
    )


def period_end_sql(
    grain: Grain, start: sa.ColumnElement[Any], timezone: str
) -> sa.ColumnElement[Any]:
    """SQL for the end of the period starting at `start`: calendar arithmetic in local time."""
    if grain == "hour":
        return start + sa.literal(dt.timedelta(hours=1), sa.Interval())
    step = {"day": "1 day", "week": "7 days", "month": "1 month", "quarter": "3 months"}.get(
        grain, "1 year"
    )
    tz = sa.literal(timezone, sa.Text())
    local = sa.func.timezone(tz, start, type_=sa.DateTime(timezone=False))
    return sa.func.timezone(
        tz,
        local + sa.cast(sa.literal(step, sa.Text()), sa.Interval()),
        type_=sa.DateTime(timezone=True),
    )


def grains_in_order(grains: Iterable[Grain]) -> list[Grain]:
    return sorted(set(grains), key=GRAIN_ORDER.index)


def latest_complete_period(
    conn: sa.Connection,
    grain: Grain,
    timezone: str,
    now: dt.datetime,
    calendar: Calendar = STANDARD,
) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the `grain` period that ended last at or before `now`, in `timezone`."""
    # The running period starts at `current`; the one before ends there (DST by PostgreSQL).
    current = period_start_sql(
        grain, sa.literal(now, sa.DateTime(timezone=True)), timezone, calendar
    )
    previous = period_start_sql(
        grain,
        current - sa.literal(dt.timedelta(microseconds=1), sa.Interval()),
        timezone,
        calendar,
    )
    start, end = conn.execute(sa.select(previous, current)).one()
    return start, end
