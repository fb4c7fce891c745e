"""Fiscal calendars: a fiscal year starting in April (quarters follow it) and weeks starting on
Sunday, against pandas' own fiscal periods (Q-MAR, Y-MAR, W-SAT) on generated Berlin data with a
late row and a correction; FY labels; a fiscal year to date."""

from __future__ import annotations

import datetime as dt
import random
from itertools import combinations
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from analytics_pipelines.lib.catalog import CatalogError
from analytics_pipelines.lib.kpi.display import period_label
from analytics_pipelines.lib.kpi.engine import refresh_kpi
from analytics_pipelines.lib.kpi.invalidation import refreshed_days
from analytics_pipelines.lib.kpi.periods import Calendar, covering_window
from analytics_pipelines.lib.kpi.plan import plan_catalog, plan_kpi
from analytics_pipelines.lib.tables import clean_table
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_kpi_support import (
    UTC,
    assert_same_values,
    create_clean,
    insert_clean,
    make_catalog,
    make_kpi,
    make_source,
    stored_values,
    unique,
)

BERLIN = "Europe/Berlin"
ZONE = ZoneInfo(BERLIN)
GRAINS = ["day", "week", "month", "quarter", "year"]
# pandas' fiscal periods: years and quarters ending in March, weeks ending on Saturday.
FREQ = {"day": "D", "week": "W-SAT", "month": "M", "quarter": "Q-MAR", "year": "Y-MAR"}
FIRST, LAST = dt.date(2024, 3, 1), dt.date(2026, 6, 30)
FISCAL = {"fiscal_year_start_month": 4, "week_start": "sunday", "timezone": BERLIN}


def _rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = dt.datetime.combine(FIRST, dt.time(), UTC)
    span = int((LAST - FIRST).total_seconds())
    moments = [start + dt.timedelta(seconds=rng.randrange(span)) for _ in range(1500)]
    # Around local midnight of fiscal boundaries and DST changes (29 March 2026 is a Sunday).
    for day in (
        dt.date(2025, 3, 31),
        dt.date(2025, 4, 1),
        dt.date(2026, 3, 29),
        dt.date(2025, 10, 26),
    ):
        for time in (dt.time(0, 5), dt.time(23, 55)):
            moments.append(dt.datetime.combine(day, time, ZONE).astimezone(UTC))
    return [
        {
            "line_id": f"l{i}",
            "at": at,
            "customer": f"c{rng.randrange(80)}",
            "region": rng.choice(["north", "south"]),
            "qty": rng.randrange(1, 10),
        }
        for i, at in enumerate(moments)
    ]


def _expected(
    rows: list[dict[str, Any]], measure: Any, year_end: str = "MAR"
) -> dict[Any, float | None]:
    frame = pd.DataFrame(rows)
    local = pd.to_datetime(frame["at"], utc=True).dt.tz_convert(BERLIN).dt.tz_localize(None)
    result: dict[Any, float | None] = {}
    freq = {**FREQ, "quarter": f"Q-{year_end}", "year": f"Y-{year_end}"}
    for grain in GRAINS:
        starts = local.dt.to_period(freq[grain]).dt.start_time
        utc_starts = starts.dt.tz_localize(BERLIN).dt.tz_convert("UTC")
        with_period = frame.assign(_period=utc_starts)
        for size in (0, 1):
            for subset in combinations(["region"], size):
                for key, group in with_period.groupby(["_period", *subset]):
                    dims = frozenset(zip(subset, key[1:], strict=True))
                    start = key[0].to_pydatetime().astimezone(UTC)
                    result[(grain, start, dims)] = float(measure(group))
    return result


MEASURES = {
    "sum(qty)": lambda g: g["qty"].sum(),
    "count_distinct(customer)": lambda g: g["customer"].nunique(),
}


@pytest.mark.parametrize("measure", list(MEASURES))
@pytest.mark.parametrize(("start_month", "year_end"), [(4, "MAR"), (11, "OCT")])
def test_fiscal_quarters_years_and_sunday_weeks_match_pandas(
    warehouse: Warehouse, measure: str, start_month: int, year_end: str
) -> None:
    """April: quarters are calendar quarters, years are not; November: neither is."""
    source = make_source(unique("fiscal"), timezone=BERLIN)
    kpi = make_kpi(
        unique("fiscal"),
        source.name,
        measure=measure,
        dimensions=["region"],
        grains=GRAINS,
        **{**FISCAL, "fiscal_year_start_month": start_month},
    )
    plan = plan_kpi(make_catalog([source], [kpi]), kpi.name)
    rows = _rows(4)
    create_clean(warehouse, source, rows)
    refresh_kpi(warehouse, plan, FIRST, LAST)
    assert_same_values(
        stored_values(warehouse, kpi.name), _expected(rows, MEASURES[measure], year_end), measure
    )

    # A late row on 2025-04-01 (the fiscal year's first day) and a correction on 2026-03-31
    # (its last): refreshing those two days rewrites their weeks, fiscal quarters and years.
    table = clean_table(source)
    late = {
        "line_id": "late",
        "at": dt.datetime(2025, 4, 1, 8, tzinfo=ZONE).astimezone(UTC),
        "customer": "c_late",
        "region": "north",
        "qty": 50,
    }
    corrected = next(r for r in rows if r["at"].astimezone(ZONE).date() == dt.date(2026, 3, 29))
    with warehouse.begin() as conn:
        insert_clean(conn, source, [late])
        conn.execute(
            table.update()
            .where(table.c.line_id == corrected["line_id"])
            .values(qty=corrected["qty"] + 7, customer="c_fixed")
        )
    corrected.update(qty=corrected["qty"] + 7, customer="c_fixed")
    rows.append(late)
    refresh_kpi(warehouse, plan, dt.date(2025, 4, 1), dt.date(2025, 4, 1))
    refresh_kpi(warehouse, plan, dt.date(2026, 3, 29), dt.date(2026, 3, 29))
    assert_same_values(
        stored_values(warehouse, kpi.name), _expected(rows, MEASURES[measure], year_end), measure
    )


def test_fiscal_windows_and_labels() -> None:
    calendar = Calendar(4, 6)
    # 2026-03-29 is a Sunday: its week starts that day; the fiscal quarter is Jan..Mar 2026.
    assert covering_window("week", dt.date(2026, 3, 31), dt.date(2026, 3, 31), calendar) == (
        dt.date(2026, 3, 29),
        dt.date(2026, 4, 5),
    )
    assert covering_window("quarter", dt.date(2026, 4, 2), dt.date(2026, 4, 2), calendar) == (
        dt.date(2026, 4, 1),
        dt.date(2026, 7, 1),
    )
    assert covering_window("year", dt.date(2026, 2, 2), dt.date(2026, 2, 2), calendar) == (
        dt.date(2025, 4, 1),
        dt.date(2026, 4, 1),
    )
    # Labels as pandas names fiscal periods (Q-MAR: the year a fiscal year ends in).
    for day in (
        dt.date(2025, 4, 1),
        dt.date(2025, 9, 30),
        dt.date(2026, 1, 1),
        dt.date(2026, 3, 1),
    ):
        start = dt.datetime.combine(day, dt.time(), ZONE)
        period = pd.Period(day, freq="Q-MAR")
        assert period_label("quarter", start, 4) == f"FY{period.qyear} Q{period.quarter}"
    assert period_label("year", dt.datetime(2025, 4, 1, tzinfo=ZONE), 4) == "FY2026"
    assert period_label("quarter", dt.datetime(2026, 4, 1, tzinfo=ZONE), 1) == "2026-Q2"


@pytest.mark.parametrize("measure", ["count(*)", "count_distinct(customer)"])
def test_fiscal_year_to_date_runs_from_april(warehouse: Warehouse, measure: str) -> None:
    source = make_source(unique("fiscal_ytd"), timezone=BERLIN)
    kpi = make_kpi(
        unique("fytd"), source.name, measure=measure, window={"to_date": "year"}, **FISCAL
    )
    catalog = make_catalog([source], [kpi])
    plans = plan_catalog(catalog)
    days = refreshed_days(plans, kpi.name, source.name, {dt.date(2026, 2, 20)}, dt.date(2026, 6, 1))
    assert (min(days), max(days)) == (dt.date(2026, 2, 20), dt.date(2026, 3, 31))
    assert len(days) == 40
    # One customer a day around the fiscal new year: the total restarts on 1 April.
    create_clean(
        warehouse,
        source,
        [
            {
                "line_id": str(i),
                "at": dt.datetime.combine(day, dt.time(0, 30), ZONE),
                "customer": f"c{i}",
            }
            for i, day in enumerate(
                [dt.date(2026, 3, 30), dt.date(2026, 3, 31), dt.date(2026, 4, 1)]
            )
        ],
    )
    refresh_kpi(warehouse, plan_kpi(catalog, kpi.name), dt.date(2026, 3, 30), dt.date(2026, 4, 2))
    by_day = {
        start.astimezone(ZONE).date(): value
        for (_, start, _), value in stored_values(warehouse, kpi.name).items()
    }
    assert by_day == {
        dt.date(2026, 3, 30): 1,
        dt.date(2026, 3, 31): 2,
        dt.date(2026, 4, 1): 1,
        dt.date(2026, 4, 2): 1,
    }


def test_derived_kpi_needs_the_calendar_of_its_inputs() -> None:
    source = make_source(unique("fiscal_derived"))
    fiscal = make_kpi("fiscal_units", source.name, measure="sum(qty)", fiscal_year_start_month=4)
    plain = make_kpi("per_unit", source.name, derived="fiscal_units / 2")
    with pytest.raises(CatalogError, match="inputs must use the same calendar"):
        plan_kpi(make_catalog([source], [fiscal, plain]), "per_unit")
