"""The KPI engine against a real PostgreSQL: measures, filters, derived KPIs, grains, dimensions,
time zones and daylight saving, backfills, the per-KPI view."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from analytics_pipelines.lib.catalog import CatalogError
from analytics_pipelines.lib.catalog.models import GRAIN_ORDER, Grain
from analytics_pipelines.lib.kpi.engine import event_time_index_name, refresh_kpi
from analytics_pipelines.lib.kpi.expressions import parse_measure
from analytics_pipelines.lib.kpi.periods import contiguous_ranges, covering_window
from analytics_pipelines.lib.kpi.plan import plan_kpi
from analytics_pipelines.lib.kpi.rollup import can_roll_up
from analytics_pipelines.lib.kpi.statements import INSERT_MARKER, grain_groups, insert_values
from analytics_pipelines.lib.tables import kpi_values
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_kpi_support import (
    UTC,
    assert_same_values,
    create_clean,
    expected_values,
    make_catalog,
    make_kpi,
    make_source,
    statements_run,
    stored_values,
    unique,
)

DAY = dt.date(2026, 5, 12)


def _at(hour: int, minute: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def _row(line: str, at: dt.date | None, **values: Any) -> dict[str, Any]:
    return {"line_id": line, "at": at, **values}


# Eight lines of one UTC day (and one of the day before, which must not count).
SMALL_ROWS = [
    _row("1", _at(1), order_id="A", customer="c1", region="north", qty=2, price=Decimal("10.5"),
         discount=Decimal("1"), status="placed", paid=True, shipped_on=dt.date(2026, 5, 13)),
    _row("2", _at(2), order_id="A", customer="c1", region="north", qty=1, price=Decimal("4"),
         discount=None, status="placed", paid=True, shipped_on=None),
    _row("3", _at(5), order_id="B", customer="c2", region="south", qty=5, price=Decimal("2"),
         discount=Decimal("0.5"), status="shipped", paid=False, shipped_on=dt.date(2026, 5, 20)),
    _row("4", _at(9), order_id="C", customer="c1", region="south", qty=3, price=Decimal("7"),
         discount=None, status="cancelled", paid=None, shipped_on=None),
    _row("5", _at(12), order_id="D", customer="c3", region=None, qty=4, price=Decimal("1.25"),
         discount=Decimal("0.25"), status="returned", paid=True, shipped_on=dt.date(2026, 5, 14)),
    _row("6", _at(18), order_id="E", customer="c4", region="east", qty=10, price=Decimal("3"),
         discount=Decimal("2"), status="placed", paid=False, shipped_on=dt.date(2026, 5, 12)),
    _row("7", _at(23, 59), order_id="E", customer="c4", region="east", qty=1, price=Decimal("100"),
         discount=None, status="placed", paid=True, shipped_on=None),
    _row("8", None, order_id="F", customer="c9", region="east", qty=99, price=Decimal("99"),
         discount=None, status="placed", paid=True, shipped_on=None),
    _row("9", _at(23, 30, DAY - dt.timedelta(days=1)), order_id="Z", customer="c8", region="north",
         qty=50, price=Decimal("50"), discount=None, status="placed", paid=True, shipped_on=None),
]  # fmt: skip


def _day_rows(
    keep: Any = lambda r: True,
) -> list[dict[str, Any]]:
    return [r for r in SMALL_ROWS if r["at"] is not None and r["at"].date() == DAY and keep(r)]


# (measure, filter, expected total for DAY computed by hand from SMALL_ROWS)
MEASURE_CASES: list[tuple[str, str | None, Any]] = [
    ("sum(qty)", None, sum(r["qty"] for r in _day_rows())),
    ("count(*)", None, len(_day_rows())),
    ("count(discount)", None, sum(1 for r in _day_rows() if r["discount"] is not None)),
    ("count_distinct(order_id)", None, len({r["order_id"] for r in _day_rows()})),
    ("avg(price)", None, sum(r["price"] for r in _day_rows()) / len(_day_rows())),
    ("min(price)", None, min(r["price"] for r in _day_rows())),
    ("max(qty * price)", None, max(r["qty"] * r["price"] for r in _day_rows())),
    (
        "sum(qty * price) - sum(discount)",
        None,
        sum(r["qty"] * r["price"] for r in _day_rows())
        - sum(r["discount"] for r in _day_rows() if r["discount"] is not None),
    ),
    ("-sum(qty)", None, -sum(r["qty"] for r in _day_rows())),
    ("sum(qty) / 4", None, Decimal(sum(r["qty"] for r in _day_rows())) / 4),
    ("sum(qty * price) / count(*)", None,
     sum(r["qty"] * r["price"] for r in _day_rows()) / len(_day_rows())),
    # filters
    ("count(*)", "status = 'placed'", len(_day_rows(lambda r: r["status"] == "placed"))),
    ("count(*)", "status != 'placed'", len(_day_rows(lambda r: r["status"] != "placed"))),
    ("sum(qty)", "qty > 3", sum(r["qty"] for r in _day_rows(lambda r: r["qty"] > 3))),
    ("sum(qty)", "qty <= 3 and price >= 4",
     sum(r["qty"] for r in _day_rows(lambda r: r["qty"] <= 3 and r["price"] >= 4))),
    ("count(*)", "status in ('placed', 'shipped')",
     len(_day_rows(lambda r: r["status"] in ("placed", "shipped")))),
    ("count(*)", "status not in ('placed', 'shipped')",
     len(_day_rows(lambda r: r["status"] not in ("placed", "shipped")))),
    ("count(*)", "discount is null", len(_day_rows(lambda r: r["discount"] is None))),
    ("count(*)", "discount is not null", len(_day_rows(lambda r: r["discount"] is not None))),
    ("count(*)", "paid", len(_day_rows(lambda r: r["paid"] is True))),
    ("count(*)", "not paid", len(_day_rows(lambda r: r["paid"] is False))),
    ("count(*)", "paid = false or region = 'east'",
     len(_day_rows(lambda r: r["paid"] is False or r["region"] == "east"))),
    ("count(*)", "not (status = 'placed' or status = 'shipped')",
     len(_day_rows(lambda r: r["status"] not in ("placed", "shipped")))),
    ("count(*)", "shipped_on >= '2026-05-14'",
     len(_day_rows(lambda r: r["shipped_on"] is not None
                   and r["shipped_on"] >= dt.date(2026, 5, 14)))),
    ("count(*)", "at < '2026-05-12T06:00:00+00:00'",
     len(_day_rows(lambda r: r["at"] < _at(6)))),
]  # fmt: skip


@pytest.fixture(scope="module")
def small_source(warehouse: Warehouse) -> Any:
    source = make_source(unique("kpi_forms"))
    create_clean(warehouse, source, SMALL_ROWS)
    return source


@pytest.mark.parametrize(("measure", "filter_text", "expected"), MEASURE_CASES)
def test_each_measure_and_filter_form(
    warehouse: Warehouse, small_source: Any, measure: str, filter_text: str | None, expected: Any
) -> None:
    kpi = make_kpi(unique("form"), small_source.name, measure=measure, filter=filter_text)
    plan = plan_kpi(make_catalog([small_source], [kpi]), kpi.name)

    result = refresh_kpi(warehouse, plan, DAY, DAY)

    values = stored_values(warehouse, kpi.name)
    total = values[("day", _at(0), frozenset())]
    assert total is not None
    assert float(total) == pytest.approx(float(expected))
    assert result.rows_by_grain == {"day": 1}


def test_min_max_of_a_timestamp_are_stored_as_epoch_seconds(
    warehouse: Warehouse, small_source: Any
) -> None:
    kpi = make_kpi(unique("latest"), small_source.name, measure="max(at)")
    refresh_kpi(warehouse, plan_kpi(make_catalog([small_source], [kpi]), kpi.name), DAY, DAY)
    value = stored_values(warehouse, kpi.name)[("day", _at(0), frozenset())]
    assert value == Decimal(int(_at(23, 59).timestamp()))


def test_derived_kpi_divides_by_zero_into_null(warehouse: Warehouse) -> None:
    source = make_source(unique("kpi_derived"))
    rows = [
        _row("1", _at(1), region="north", qty=6, price=Decimal("2")),
        _row("2", _at(2), region="north", qty=4, price=Decimal("0")),
        _row("3", _at(3), region="south", qty=5, price=Decimal("0")),
        _row("4", _at(4), region="west", qty=5, price=None),
    ]
    create_clean(warehouse, source, rows)
    units = make_kpi(unique("units"), source.name, measure="sum(qty)", dimensions=["region"])
    value = make_kpi(
        unique("value"), source.name, measure="sum(qty * price)", dimensions=["region"]
    )
    per_unit = make_kpi(
        unique("per_unit"),
        source.name,
        derived=f"{units.name} / {value.name} * 100",
        dimensions=["region"],
    )
    catalog = make_catalog([source], [units, value, per_unit])
    for kpi in (units, value, per_unit):
        refresh_kpi(warehouse, plan_kpi(catalog, kpi.name), DAY, DAY)

    stored = stored_values(warehouse, per_unit.name)
    day = _at(0)
    assert float(stored[("day", day, frozenset({("region", "north")}))] or 0) == pytest.approx(
        10 / 12 * 100
    )
    assert stored[("day", day, frozenset({("region", "south")}))] is None  # 5 / 0
    assert stored[("day", day, frozenset({("region", "west")}))] is None  # 5 / NULL
    assert float(stored[("day", day, frozenset())] or 0) == pytest.approx(20 / 12 * 100)


def test_derived_kpi_must_share_the_time_zone_of_its_inputs() -> None:
    source = make_source(unique("kpi_zones"))
    base = make_kpi(unique("base"), source.name, measure="count(*)", timezone="Europe/Berlin")
    derived = make_kpi(unique("twice"), source.name, derived=f"{base.name} * 2")
    with pytest.raises(CatalogError, match="same time zone"):
        plan_kpi(make_catalog([source], [base, derived]), derived.name)


def _random_rows(seed: int, first: dt.datetime, days: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        at = first + dt.timedelta(seconds=rng.randrange(days * 86400))
        rows.append(
            _row(
                str(i),
                at if rng.random() > 0.01 else None,
                order_id=f"O{rng.randrange(count // 3)}",
                customer=f"c{rng.randrange(40)}",
                region=rng.choice(["north", "south", "east", None]),
                channel=rng.choice(["web", "store"]),
                qty=rng.randrange(1, 20),
                price=Decimal(rng.randrange(100, 10000)) / 100,
                discount=None if rng.random() < 0.3 else Decimal(rng.randrange(0, 300)) / 100,
                status=rng.choice(["placed", "shipped", "cancelled"]),
                paid=rng.choice([True, False, None]),
            )
        )
    return rows


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    for column in ("price", "discount"):
        frame[column] = frame[column].astype(float)
    return frame


INDEPENDENT_CASES: list[tuple[str, str | None, Any, Any]] = [
    ("sum(qty * price) - sum(discount)", "status in ('placed', 'shipped')",
     lambda g: (g["qty"] * g["price"]).sum() - g["discount"].sum(),
     lambda f: f["status"].isin(["placed", "shipped"])),
    ("count_distinct(customer)", "status != 'cancelled'",
     lambda g: g["customer"].nunique(), lambda f: f["status"] != "cancelled"),
    ("avg(price)", "paid", lambda g: g["price"].mean(), lambda f: f["paid"] == True),  # noqa: E712
    ("count(*)", None, lambda g: len(g), None),
    ("max(qty)", "discount is not null", lambda g: g["qty"].max(),
     lambda f: f["discount"].notna()),
]  # fmt: skip


@pytest.mark.parametrize("timezone", ["Europe/Berlin", "UTC"])
@pytest.mark.parametrize(("measure", "filter_text", "compute", "keep"), INDEPENDENT_CASES)
def test_values_match_an_independent_pandas_computation(
    warehouse: Warehouse,
    timezone: str,
    measure: str,
    filter_text: str | None,
    compute: Any,
    keep: Any,
) -> None:
    source = make_source(unique("kpi_pandas"))
    # Spans a spring DST change, month, quarter and year ends.
    rows = _random_rows(7, dt.datetime(2025, 12, 20, tzinfo=UTC), 120, 700)
    create_clean(warehouse, source, rows)
    grains = ["hour", "day", "week", "month", "quarter", "year"]
    kpi = make_kpi(
        unique("indep"),
        source.name,
        measure=measure,
        filter=filter_text,
        dimensions=["region", "channel"],
        grains=grains,
        timezone=timezone,
    )
    plan = plan_kpi(make_catalog([source], [kpi]), kpi.name)

    refresh_kpi(warehouse, plan, dt.date(2025, 12, 19), dt.date(2026, 4, 20))

    expected = expected_values(
        _frame(rows),
        grains=grains,
        timezone=timezone,
        dimensions=["region", "channel"],
        measure=compute,
        keep=keep,
    )
    assert_same_values(stored_values(warehouse, kpi.name), expected, f"{measure} in {timezone}")


ROLLED_UP_MEASURES = [
    "avg(price)",
    "avg(qty)",
    "sum(qty * price) - sum(discount)",
    "sum(qty * price) / count(*)",
    "count(discount) + min(price) * max(qty)",
    "max(at)",
]


@pytest.mark.parametrize("measure", ROLLED_UP_MEASURES)
def test_rolled_up_values_equal_those_computed_from_every_row(
    warehouse: Warehouse, measure: str
) -> None:
    source = make_source(unique("kpi_rollup"))
    rows = _random_rows(5, dt.datetime(2025, 12, 20, tzinfo=UTC), 120, 600)
    create_clean(warehouse, source, rows)
    grains: list[Grain] = ["hour", "day", "week", "month", "quarter", "year"]
    kpi = make_kpi(
        unique("rolled"), source.name, measure=measure, filter="status != 'cancelled'",
        dimensions=["region", "channel"], grains=grains, timezone="Europe/Berlin",
    )  # fmt: skip
    plan = plan_kpi(make_catalog([source], [kpi]), kpi.name)
    assert plan.measure is not None and can_roll_up(plan.measure)
    first, last = dt.date(2025, 12, 19), dt.date(2026, 4, 20)

    refresh_kpi(warehouse, plan, first, last)
    rolled = stored_values(warehouse, kpi.name)

    windows = {g: covering_window(g, first, last) for g in grains}
    with warehouse.begin() as conn:
        conn.execute(kpi_values.delete().where(kpi_values.c.kpi == kpi.name))
        for statement in insert_values(plan, windows, roll_up=False):
            conn.execute(statement)
    from_rows = stored_values(warehouse, kpi.name)

    assert len(rolled) > 1000
    # Same keys, same numbers, same digits (avg's scale included).
    assert {k: str(v) for k, v in rolled.items()} == {k: str(v) for k, v in from_rows.items()}


def test_distinct_counts_are_not_rolled_up() -> None:
    types = make_source("any").column_types
    assert not can_roll_up(parse_measure("count_distinct(customer)", types))
    assert not can_roll_up(parse_measure("count_distinct(customer) / count(*)", types))
    assert can_roll_up(parse_measure("avg(price) - min(qty) / count(*)", types))


def test_coarser_periods_are_exact_not_sums_of_days(warehouse: Warehouse) -> None:
    source = make_source(unique("kpi_exact"))
    # The same customer on two days of one month: 1 distinct customer in the month, not 2.
    rows = [
        _row("1", _at(10, day=dt.date(2026, 5, 3)), customer="c1"),
        _row("2", _at(10, day=dt.date(2026, 5, 20)), customer="c1"),
        _row("3", _at(10, day=dt.date(2026, 5, 20)), customer="c2"),
    ]
    create_clean(warehouse, source, rows)
    kpi = make_kpi(
        unique("customers"), source.name, measure="count_distinct(customer)",
        grains=["day", "month"],
    )  # fmt: skip
    plan = plan_kpi(make_catalog([source], [kpi]), kpi.name)

    # Refreshing only 2026-05-20 recomputes the whole month from the clean rows.
    refresh_kpi(warehouse, plan, dt.date(2026, 5, 20), dt.date(2026, 5, 20))

    stored = stored_values(warehouse, kpi.name)
    assert stored == {
        ("day", _at(0, day=dt.date(2026, 5, 20)), frozenset()): Decimal(2),
        ("month", _at(0, day=dt.date(2026, 5, 1)), frozenset()): Decimal(2),
    }


def _dst_rows() -> list[dict[str, Any]]:
    """A row every 30 minutes around both 2026 Europe/Berlin changes, plus marker rows."""
    rows = []
    for first in (
        dt.datetime(2026, 3, 27, 12, tzinfo=UTC),
        dt.datetime(2026, 10, 23, 12, tzinfo=UTC),
    ):
        for step in range(4 * 48):
            rows.append(
                _row(f"{first.date()}-{step}", first + dt.timedelta(minutes=30 * step), qty=1)
            )
    return rows  # fmt: skip


@pytest.fixture(scope="module")
def dst_source(warehouse: Warehouse) -> Any:
    source = make_source(unique("kpi_dst"))
    create_clean(warehouse, source, _dst_rows())
    return source


def _hours(stored: dict[Any, Any], grain: str = "hour") -> list[tuple[dt.datetime, Any]]:
    return sorted((k[1], v) for k, v in stored.items() if k[0] == grain and not k[2])


def test_berlin_spring_day_has_23_hours_and_autumn_day_25(
    warehouse: Warehouse, dst_source: Any
) -> None:
    kpi = make_kpi(
        unique("berlin"), dst_source.name, measure="sum(qty)", grains=["hour", "day", "week"],
        timezone="Europe/Berlin",
    )  # fmt: skip
    plan = plan_kpi(make_catalog([dst_source], [kpi]), kpi.name)

    spring = refresh_kpi(warehouse, plan, dt.date(2026, 3, 29), dt.date(2026, 3, 29))
    autumn = refresh_kpi(warehouse, plan, dt.date(2026, 10, 25), dt.date(2026, 10, 25))

    assert spring.rows_by_grain["hour"] == 23
    assert autumn.rows_by_grain["hour"] == 25
    stored = stored_values(warehouse, kpi.name)
    days = dict(_hours(stored, "day"))
    # Local midnight: 23:00 UTC in winter, 22:00 UTC in summer; two rows per hour.
    assert days[dt.datetime(2026, 3, 28, 23, tzinfo=UTC)] == 46
    assert days[dt.datetime(2026, 10, 24, 22, tzinfo=UTC)] == 50
    hours = _hours(stored)
    assert [v for _, v in hours] == [2] * 48
    # The two 02:00 local hours of 25 October are distinct periods.
    autumn_hours = [t for t, _ in hours if t >= dt.datetime(2026, 10, 24, 22, tzinfo=UTC)]
    assert dt.datetime(2026, 10, 25, 0, tzinfo=UTC) in autumn_hours
    assert dt.datetime(2026, 10, 25, 1, tzinfo=UTC) in autumn_hours
    # Weeks start on Monday (local midnight): 2026-03-23 and 2026-10-19.
    weeks = dict(_hours(stored, "week"))
    assert set(weeks) == {
        dt.datetime(2026, 3, 22, 23, tzinfo=UTC),
        dt.datetime(2026, 10, 18, 22, tzinfo=UTC),
    }
    with warehouse.connect() as conn:
        lengths = conn.execute(
            sa.text(
                "SELECT period_end - period_start FROM kpi.kpi_values "
                "WHERE kpi = :kpi AND grain = 'day' ORDER BY period_start"
            ),
            {"kpi": kpi.name},
        ).scalars().all()  # fmt: skip
    assert lengths == [dt.timedelta(hours=23), dt.timedelta(hours=25)]


def test_event_at_2330_utc_belongs_to_the_next_berlin_day_but_same_utc_day(
    warehouse: Warehouse,
) -> None:
    source = make_source(unique("kpi_midnight"))
    create_clean(
        warehouse, source, [_row("1", dt.datetime(2026, 1, 14, 23, 30, tzinfo=UTC), qty=7)]
    )
    berlin = make_kpi(unique("berlin"), source.name, measure="sum(qty)", timezone="Europe/Berlin")
    utc = make_kpi(unique("utc"), source.name, measure="sum(qty)", timezone="UTC")
    catalog = make_catalog([source], [berlin, utc])

    refresh_kpi(
        warehouse, plan_kpi(catalog, berlin.name), dt.date(2026, 1, 14), dt.date(2026, 1, 15)
    )
    refresh_kpi(warehouse, plan_kpi(catalog, utc.name), dt.date(2026, 1, 14), dt.date(2026, 1, 15))

    assert stored_values(warehouse, berlin.name) == {
        ("day", dt.datetime(2026, 1, 14, 23, tzinfo=UTC), frozenset()): Decimal(7)
    }
    assert stored_values(warehouse, utc.name) == {
        ("day", dt.datetime(2026, 1, 14, 0, tzinfo=UTC), frozenset()): Decimal(7)
    }  # fmt: skip


def test_utc_kpi_days_have_24_hours(warehouse: Warehouse, dst_source: Any) -> None:
    kpi = make_kpi(unique("utc_hours"), dst_source.name, measure="sum(qty)", grains=["hour"])
    result = refresh_kpi(
        warehouse, plan_kpi(make_catalog([dst_source], [kpi]), kpi.name),
        dt.date(2026, 3, 29), dt.date(2026, 3, 29),
    )  # fmt: skip
    assert result.rows_by_grain == {"hour": 24}


def test_date_event_time_uses_the_date_as_the_local_day(warehouse: Warehouse) -> None:
    source = make_source(unique("kpi_dates"), event_type="date")
    create_clean(
        warehouse,
        source,
        [_row("1", dt.date(2026, 3, 29), qty=1), _row("2", dt.date(2026, 3, 30), qty=2)],
    )
    kpi = make_kpi(unique("by_date"), source.name, measure="sum(qty)", timezone="Europe/Berlin",
                   grains=["day", "month"])  # fmt: skip
    refresh_kpi(
        warehouse, plan_kpi(make_catalog([source], [kpi]), kpi.name),
        dt.date(2026, 3, 29), dt.date(2026, 3, 29),
    )  # fmt: skip
    assert stored_values(warehouse, kpi.name) == {
        ("day", dt.datetime(2026, 3, 28, 23, tzinfo=UTC), frozenset()): Decimal(1),
        ("month", dt.datetime(2026, 2, 28, 23, tzinfo=UTC), frozenset()): Decimal(3),
    }


def test_backfill_computes_a_range_with_one_statement_per_grain(warehouse: Warehouse) -> None:
    source = make_source(unique("kpi_backfill"))
    rows = _random_rows(11, dt.datetime(2026, 1, 1, tzinfo=UTC), 90, 900)
    create_clean(warehouse, source, rows)
    grains: list[Grain] = ["day", "week", "month"]
    kpi = make_kpi(
        unique("backfill"), source.name, measure="count_distinct(customer)",
        dimensions=["region"], grains=grains, timezone="Europe/Berlin",
    )  # fmt: skip
    plan = plan_kpi(make_catalog([source], [kpi]), kpi.name)

    with statements_run() as statements:
        result = refresh_kpi(warehouse, plan, dt.date(2026, 1, 1), dt.date(2026, 4, 1))

    # At most one statement per grain whatever the number of days; here the days, weeks and
    # months of the range nearly coincide and share a single scan.
    inserts = [s for s in statements if s.startswith(INSERT_MARKER)]
    assert 1 <= len(inserts) <= len(grains)
    assert grain_groups(
        {g: covering_window(g, dt.date(2026, 1, 1), dt.date(2026, 4, 1)) for g in grains}
    ) == [grains]
    assert result.rows_by_grain["day"] >= 90  # at least the total of every day
    expected = expected_values(
        _frame(rows), grains=grains, timezone="Europe/Berlin", dimensions=["region"],
        measure=lambda g: g["customer"].nunique(),
    )  # fmt: skip
    assert_same_values(stored_values(warehouse, kpi.name), expected, "backfill")

    # Refreshing again is idempotent: same values, no duplicates.
    refresh_kpi(warehouse, plan, dt.date(2026, 1, 1), dt.date(2026, 4, 1))
    assert_same_values(stored_values(warehouse, kpi.name), expected, "backfill again")


def test_refresh_uses_an_index_on_the_event_time(warehouse: Warehouse) -> None:
    source = make_source(unique("kpi_index"))
    create_clean(warehouse, source, _random_rows(3, dt.datetime(2026, 1, 1, tzinfo=UTC), 30, 300))
    kpi = make_kpi(unique("indexed"), source.name, measure="count(*)")
    plan = plan_kpi(make_catalog([source], [kpi]), kpi.name)
    refresh_kpi(warehouse, plan, dt.date(2026, 1, 5), dt.date(2026, 1, 5))

    from analytics_pipelines.lib.kpi.statements import insert_measure

    statement = insert_measure(plan, {"day": (dt.date(2026, 1, 5), dt.date(2026, 1, 6))})
    compiled = statement.compile(warehouse.engine, compile_kwargs={"literal_binds": True})
    with warehouse.begin() as conn:
        # A tiny table is read sequentially anyway; forbidding that proves the range is sargable.
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan_text = "\n".join(conn.execute(sa.text(f"EXPLAIN {compiled}")).scalars().all())
    assert event_time_index_name(source) in plan_text


def test_missing_clean_table_is_skipped_with_a_reason(warehouse: Warehouse) -> None:
    source = make_source(unique("kpi_nothing"))
    kpi = make_kpi(unique("nothing"), source.name, measure="count(*)")
    result = refresh_kpi(warehouse, plan_kpi(make_catalog([source], [kpi]), kpi.name), DAY, DAY)
    assert result.skipped is not None and f"clean.{source.name}" in result.skipped
    assert result.rows == 0


def test_view_shows_local_periods_dimensions_and_values(
    warehouse: Warehouse, small_source: Any
) -> None:
    kpi = make_kpi(
        unique("viewed"), small_source.name, measure="sum(qty)", dimensions=["region"],
        timezone="Europe/Berlin",
    )  # fmt: skip
    refresh_kpi(warehouse, plan_kpi(make_catalog([small_source], [kpi]), kpi.name), DAY, DAY)
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.text(
                f'SELECT grain, period_start_local, region, breakdown, value FROM kpi."{kpi.name}" '
                "ORDER BY breakdown, region NULLS FIRST"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        # Berlin day: line 9 (23:30 UTC the day before) counts, line 7 (23:59 UTC) does not.
        ("day", dt.datetime(2026, 5, 12), None, [], Decimal(75)),
        ("day", dt.datetime(2026, 5, 12), None, ["region"], Decimal(4)),
        ("day", dt.datetime(2026, 5, 12), "east", ["region"], Decimal(10)),
        ("day", dt.datetime(2026, 5, 12), "north", ["region"], Decimal(53)),
        ("day", dt.datetime(2026, 5, 12), "south", ["region"], Decimal(8)),
    ]


def test_one_day_refresh_keeps_one_statement_per_grain() -> None:
    day = dt.date(2026, 3, 29)
    some: tuple[Grain, ...] = ("hour", "day", "week", "month", "year")
    windows = {g: covering_window(g, day, day) for g in some}
    assert grain_groups(windows) == [["hour", "day"], ["week"], ["month"], ["year"]]
    year_long = {
        g: covering_window(g, dt.date(2025, 6, 16), dt.date(2026, 6, 15)) for g in GRAIN_ORDER[1:]
    }
    assert grain_groups(year_long) == [["day", "week", "month", "quarter", "year"]]


def test_periods_helpers() -> None:
    assert covering_window("week", dt.date(2026, 3, 29), dt.date(2026, 3, 30)) == (
        dt.date(2026, 3, 23),
        dt.date(2026, 4, 6),
    )
    assert covering_window("quarter", dt.date(2026, 2, 1), dt.date(2026, 4, 1)) == (
        dt.date(2026, 1, 1),
        dt.date(2026, 7, 1),
    )
    assert covering_window("year", dt.date(2026, 12, 31), dt.date(2026, 12, 31)) == (
        dt.date(2026, 1, 1),
        dt.date(2027, 1, 1),
    )
    days = [dt.date(2026, 1, d) for d in (5, 1, 2, 3, 9, 10)]
    assert contiguous_ranges(days) == [
        (dt.date(2026, 1, 1), dt.date(2026, 1, 3)),
        (dt.date(2026, 1, 5), dt.date(2026, 1, 5)),
        (dt.date(2026, 1, 9), dt.date(2026, 1, 10)),
    ]
