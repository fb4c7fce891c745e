"""Period-over-period values (previous period, same period a year earlier) in the BI view and
`kpi show`, against pandas' own calendar arithmetic on generated Berlin data with late rows, a
correction, DST days and a leap day."""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import sqlalchemy as sa

from analytics_pipelines.lib.kpi.engine import refresh_kpi
from analytics_pipelines.lib.kpi.plan import plan_kpi
from analytics_pipelines.lib.kpi.query import read_values
from analytics_pipelines.lib.pg import read_only
from analytics_pipelines.lib.tables import clean_table
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_kpi_cli import run, write_catalog
from analytics_pipelines_tests.test_kpi_support import (
    UTC,
    create_clean,
    expected_values,
    insert_clean,
    make_catalog,
    make_kpi,
    make_source,
    unique,
)

BERLIN = "Europe/Berlin"
ZONE = ZoneInfo(BERLIN)
GRAINS = ["hour", "day", "week", "month", "quarter", "year"]
FIRST, LAST = dt.date(2023, 1, 1), dt.date(2026, 4, 15)
# Days that must have rows: DST changes in Berlin, the leap day and its year-ago neighbours.
FORCED = [
    dt.date(2026, 3, 29),
    dt.date(2026, 3, 30),
    dt.date(2025, 3, 30),
    dt.date(2025, 10, 26),
    dt.date(2025, 10, 27),
    dt.date(2024, 2, 28),
    dt.date(2024, 2, 29),
    dt.date(2023, 2, 28),
    dt.date(2025, 2, 28),
    dt.date(2025, 4, 11),
]
PREVIOUS = {
    "day": pd.DateOffset(days=1),
    "week": pd.DateOffset(weeks=1),
    "month": pd.DateOffset(months=1),
    "quarter": pd.DateOffset(months=3),
    "year": pd.DateOffset(years=1),
}


def _rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    span = int(
        (
            dt.datetime.combine(LAST, dt.time()) - dt.datetime.combine(FIRST, dt.time())
        ).total_seconds()
    )
    moments = [
        dt.datetime.combine(FIRST, dt.time(), UTC) + dt.timedelta(seconds=rng.randrange(span))
        for _ in range(2500)
    ]
    moments += [
        dt.datetime.combine(day, dt.time(hour), ZONE).astimezone(UTC)
        for day in FORCED
        for hour in (0, 1, 12, 23)
    ]
    # Both 02:00 hours of Berlin's autumn night (00:30 and 01:30 UTC).
    moments += [dt.datetime(2025, 10, 26, hour, 30, tzinfo=UTC) for hour in (0, 1)]
    return [
        {
            "line_id": f"l{i}",
            "at": at,
            "region": rng.choice(["north", "south", None]),
            # Zeros make some bases 0, where growth is NULL.
            "qty": rng.choice([0, 0, 1, 2, 3, 5, 8]),
        }
        for i, at in enumerate(moments)
    ]


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    return frame


def _base_start(grain: str, start: dt.datetime, comparison: str) -> dt.datetime | None:
    """The base period's start by pandas: local calendar arithmetic, localised in Berlin."""
    if grain == "hour" and comparison == "previous":
        return start - dt.timedelta(hours=1)
    local = pd.Timestamp(start.astimezone(ZONE).replace(tzinfo=None))
    if comparison == "previous":
        base = local - PREVIOUS[grain]
    else:
        base = local - (pd.DateOffset(weeks=52) if grain == "week" else pd.DateOffset(years=1))
    localised = base.tz_localize(BERLIN, ambiguous="NaT", nonexistent="NaT")
    if pd.isna(localised):
        return None
    return localised.to_pydatetime().astimezone(UTC)


def _view(warehouse: Warehouse, name: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    with warehouse.connect() as conn:
        rows = conn.execute(sa.text(f'SELECT * FROM kpi."{name}"')).mappings().all()
    return {
        (
            row["grain"],
            row["period_start"].astimezone(UTC),
            frozenset({("region", row["region"])} if "region" in row["breakdown"] else set()),
        ): dict(row)
        for row in rows
    }


def _close(got: Decimal | None, want: float | None, label: str) -> None:
    if want is None:
        assert got is None, f"{label}: expected NULL, got {got}"
    else:
        assert got is not None, f"{label}: expected {want}, got NULL"
        assert abs(float(got) - want) <= 1e-9 * max(1.0, abs(want)), f"{label}: {got} != {want}"


def _assert_comparisons(warehouse: Warehouse, name: str, rows: list[dict[str, Any]]) -> int:
    expected = expected_values(
        _frame(rows),
        grains=GRAINS,
        timezone=BERLIN,
        dimensions=["region"],
        measure=lambda g: g["qty"].sum(),
    )
    view = _view(warehouse, name)
    assert set(view) == set(expected)
    checked = 0
    for (grain, start, dims), want in expected.items():
        row = view[(grain, start, dims)]
        assert want is not None  # a sum over a cell's rows
        for comparison in ("previous", "year_ago"):
            base_start = _base_start(grain, start, comparison)
            if base_start is None:
                continue  # no such local start a year earlier (hours around DST changes only)
            base = expected.get((grain, base_start, dims))
            label = f"{comparison} of {grain} {start} {set(dims)}"
            _close(row[f"{comparison}_value"], base, label)
            _close(row[f"{comparison}_diff"], None if base is None else want - base, label)
            growth = None if not base else (want - base) / base
            _close(row[f"{comparison}_growth"], growth, label)
            checked += base is not None
    return checked


@pytest.fixture()
def berlin_kpi(warehouse: Warehouse) -> Any:
    source = make_source(unique("pop"), timezone=BERLIN)
    kpi = make_kpi(
        unique("pop_qty"),
        source.name,
        measure="sum(qty)",
        dimensions=["region"],
        grains=GRAINS,
        timezone=BERLIN,
    )
    plan = plan_kpi(make_catalog([source], [kpi]), kpi.name)
    return source, kpi, plan


def _loaded(warehouse: Warehouse, berlin_kpi: Any, seed: int) -> list[dict[str, Any]]:
    """Generated rows in the clean table, every period of FIRST..LAST computed."""
    source, _, plan = berlin_kpi
    rows = _rows(seed)
    create_clean(warehouse, source, rows)
    refresh_kpi(warehouse, plan, FIRST, LAST)
    return rows


def test_previous_and_year_ago_follow_local_calendars(
    warehouse: Warehouse, berlin_kpi: Any
) -> None:
    kpi = berlin_kpi[1]
    rows = _loaded(warehouse, berlin_kpi, 15)
    assert _assert_comparisons(warehouse, kpi.name, rows) > 5000

    view = _view(warehouse, kpi.name)
    total: frozenset[tuple[str, Any]] = frozenset()

    def day(d: dt.date) -> dict[str, Any]:
        return view[("day", dt.datetime.combine(d, dt.time(), ZONE).astimezone(UTC), total)]

    # The day before 2026-03-30 is the 23-hour 2026-03-29; the year-ago of the leap day is
    # 2023-02-28, which 2024-02-28 compares with too; 2025-02-28 compares with 2024-02-28.
    spring = day(dt.date(2026, 3, 29))
    assert spring["period_end"] - spring["period_start"] == dt.timedelta(hours=23)
    assert day(dt.date(2026, 3, 30))["previous_value"] == spring["value"]
    assert day(dt.date(2024, 2, 29))["year_ago_value"] == day(dt.date(2023, 2, 28))["value"]
    assert day(dt.date(2024, 2, 28))["year_ago_value"] == day(dt.date(2023, 2, 28))["value"]
    assert day(dt.date(2025, 2, 28))["year_ago_value"] == day(dt.date(2024, 2, 28))["value"]
    # The two 02:00 hours of the autumn night follow each other.
    first_two = dt.datetime(2025, 10, 26, 0, 0, tzinfo=UTC)  # 02:00+02:00
    second_two = first_two + dt.timedelta(hours=1)  # 02:00+01:00
    hours = {k[1]: v for k, v in view.items() if k[0] == "hour" and k[2] == total}
    assert hours[second_two]["previous_value"] == hours[first_two]["value"]


def test_late_row_and_correction_change_comparisons_without_their_refresh(
    warehouse: Warehouse, berlin_kpi: Any
) -> None:
    source, kpi, plan = berlin_kpi
    rows = _loaded(warehouse, berlin_kpi, 16)
    # A late row on 2025-04-10 (a day with no row before): only that day (and its week, month…)
    # is refreshed; 2025-04-11's previous value and 2026-04-10's year-ago value follow.
    late = {
        "line_id": "late",
        "at": dt.datetime(2025, 4, 10, 9, tzinfo=ZONE).astimezone(UTC),
        "region": "north",
        "qty": 40,
    }
    table = clean_table(source)
    with warehouse.begin() as conn:
        conn.execute(
            table.delete().where(
                table.c.at >= dt.datetime(2025, 4, 10, tzinfo=ZONE),
                table.c.at < dt.datetime(2025, 4, 11, tzinfo=ZONE),
            )
        )
        insert_clean(conn, source, [late])
    rows = [r for r in rows if r["at"].astimezone(ZONE).date() != dt.date(2025, 4, 10)] + [late]
    refresh_kpi(warehouse, plan, dt.date(2025, 4, 10), dt.date(2025, 4, 10))
    view = _view(warehouse, kpi.name)
    next_day = dt.datetime(2025, 4, 11, tzinfo=ZONE).astimezone(UTC)
    assert view[("day", next_day, frozenset())]["previous_value"] == 40
    # A correction: the late row's quantity goes from 40 to 10.
    with warehouse.begin() as conn:
        conn.execute(table.update().where(table.c.line_id == "late").values(qty=10))
    late["qty"] = 10
    refresh_kpi(warehouse, plan, dt.date(2025, 4, 10), dt.date(2025, 4, 10))
    _assert_comparisons(warehouse, kpi.name, rows)


def test_kpi_show_reads_the_same_comparisons(
    warehouse: Warehouse,
    database_url: str,
    berlin_kpi: Any,
    capsys: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, kpi, _ = berlin_kpi
    _loaded(warehouse, berlin_kpi, 17)
    view = _view(warehouse, kpi.name)
    with read_only(database_url) as conn:
        months = read_values(
            conn, kpi, "month", dt.date(2025, 1, 1), dt.date(2026, 3, 31), ["region"], True
        )
    assert len(months) == 15 * 4
    for value in months:
        start = value.period_start.astimezone(UTC)
        row = view[("month", start, frozenset(value.dimensions.items()))]
        for name in ("previous_value", "previous_diff", "previous_growth", "year_ago_value",
                     "year_ago_diff", "year_ago_growth"):  # fmt: skip
            assert getattr(value, name) == row[name], (name, start, value.dimensions)
    assert all(v.previous_value is not None for v in months)

    monkeypatch.setenv("CATALOG_DIR", str(write_catalog(tmp_path / "catalog", [source], [kpi])))
    monkeypatch.setenv("STORAGE_URL", f"file://{tmp_path}/store")
    capsys.readouterr()  # the refresh's log lines
    assert run(["kpi", "show", kpi.name, "--grain", "month", "--from", "2026-03-01",
                "--to", "2026-03-31", "--format", "json"]) == 0  # fmt: skip
    (total,) = json.loads(capsys.readouterr().out)
    march = view[("month", dt.datetime(2026, 3, 1, tzinfo=ZONE).astimezone(UTC), frozenset())]
    assert total["previous_value"] == float(march["previous_value"])
    assert total["year_ago_value"] == float(march["year_ago_value"])
    assert run(["kpi", "show", kpi.name, "--grain", "month", "--from", "2026-03-01",
                "--to", "2026-03-31", "--compare"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert "vs previous" in lines[1] and "vs year ago" in lines[1]
    growth = (march["value"] - march["previous_value"]) / march["previous_value"]
    assert f"{growth * 100:+.1f}%".replace(".0%", "%") in lines[3]
