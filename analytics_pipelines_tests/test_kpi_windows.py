"""Window KPIs (rolling N days, month/quarter/year/all to date) against an independent pandas
computation on generated Berlin data, with late rows, a correction and DST days; the catalog
rules; which days a late row refreshes."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from itertools import combinations
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from analytics_pipelines.defs.kpis.factory import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    REASON_TAG,
    build_kpi_definitions,
)
from analytics_pipelines.defs.run_priority import PRIORITY_TAG
from analytics_pipelines.lib.catalog import CatalogError, KpiSpec, load_catalog
from analytics_pipelines.lib.catalog.models import WindowSpec
from analytics_pipelines.lib.kpi.engine import refresh_kpi
from analytics_pipelines.lib.kpi.invalidation import refreshed_days
from analytics_pipelines.lib.kpi.periods import contiguous_ranges, local_date, window_first_day
from analytics_pipelines.lib.kpi.plan import plan_catalog, plan_kpi
from analytics_pipelines.lib.kpi.statements import INSERT_MARKER
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR
from analytics_pipelines.lib.tables import clean_table
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import WarehouseResource
from analytics_pipelines_tests.test_kpi_support import (
    UTC,
    assert_same_values,
    create_clean,
    insert_clean,
    last_touched_id,
    make_catalog,
    make_kpi,
    make_source,
    record_touched,
    statements_run,
    stored_values,
    unique,
)

BERLIN = "Europe/Berlin"
ZONE = ZoneInfo(BERLIN)
DATA_FIRST, DATA_LAST = dt.date(2025, 9, 1), dt.date(2026, 4, 12)
# Refreshed from here: the windows of the first days reach back into older rows.
FIRST = dt.date(2025, 10, 20)
DST_DAYS = [dt.date(2025, 10, 26), dt.date(2026, 3, 29)]

# name -> (window, measure, filter, the same by pandas over a window's rows)
CASES: dict[str, tuple[dict[str, Any], str, str | None, Any]] = {
    "sum_7d": (
        {"rolling": 7},
        "sum(qty)",
        "status = 'placed'",
        lambda g: g.loc[g["status"] == "placed", "qty"].sum(),
    ),
    "avg_28d": ({"rolling": 28}, "avg(qty)", None, lambda g: g["qty"].mean()),
    "customers_28d": (
        {"rolling": 28},
        "count_distinct(customer)",
        None,
        lambda g: g["customer"].nunique(),
    ),
    "lines_mtd": ({"to_date": "month"}, "count(*)", None, len),
    "qty_qtd": (
        {"to_date": "quarter"},
        "(sum(qty) where status = 'placed') - sum(qty)",
        None,
        lambda g: g.loc[g["status"] == "placed", "qty"].sum() - g["qty"].sum(),
    ),
    "customers_ytd": (
        {"to_date": "year"},
        "count_distinct(customer)",
        "status = 'placed'",
        lambda g: g.loc[g["status"] == "placed", "customer"].nunique(),
    ),
    "max_all": ({"to_date": "all"}, "max(qty)", None, lambda g: g["qty"].max()),
    "big_customers_qtd": (
        {"to_date": "quarter"},
        "count_distinct(customer) where qty > 10",
        "status = 'placed'",
        lambda g: g.loc[(g["status"] == "placed") & (g["qty"] > 10), "customer"].nunique(),
    ),
    "customers_all": (
        {"to_date": "all"},
        "count_distinct(customer)",
        None,
        lambda g: g["customer"].nunique(),
    ),
}


def _rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = dt.datetime.combine(DATA_FIRST, dt.time(), UTC)
    span = int((DATA_LAST - DATA_FIRST).total_seconds())
    moments = [start + dt.timedelta(seconds=rng.randrange(span)) for _ in range(1500)]
    # Rows right after and before local midnight around the DST changes: a 23- or 25-hour day
    # is one day of a window, and these rows are on the local days around it.
    for day in DST_DAYS:
        for offset in (-1, 0, 1):
            local = day + dt.timedelta(days=offset)
            moments.append(dt.datetime.combine(local, dt.time(0, 10), ZONE).astimezone(UTC))
            moments.append(dt.datetime.combine(local, dt.time(23, 50), ZONE).astimezone(UTC))
    return [
        {
            "line_id": f"l{i}",
            "at": at,
            "customer": f"c{rng.randrange(60)}",
            "region": rng.choice(["north", "south", None]),
            "qty": rng.randrange(1, 20),
            "status": rng.choice(["placed", "placed", "cancelled"]),
        }
        for i, at in enumerate(moments)
    ]


def _expected(
    rows: list[dict[str, Any]], name: str, first: dt.date, last: dt.date
) -> dict[tuple[str, dt.datetime, frozenset[tuple[str, Any]]], float | None]:
    """Per local day of [first, last] and dimension subset, the measure over its window's rows
    (a cell where the window has rows), by pandas."""
    window, _, _, measure = CASES[name]
    spec = WindowSpec(**window)
    frame = pd.DataFrame(rows)
    frame["day"] = pd.to_datetime(frame["at"], utc=True).dt.tz_convert(BERLIN).dt.date
    result: dict[tuple[str, dt.datetime, frozenset[tuple[str, Any]]], float | None] = {}
    day = first
    while day <= last:
        start = window_first_day(spec, day) or dt.date.min
        inside = frame[(frame["day"] >= start) & (frame["day"] <= day)]
        moment = dt.datetime.combine(day, dt.time(), ZONE).astimezone(UTC)
        for size in (0, 1):
            for subset in combinations(["region"], size):
                groups = inside.groupby(list(subset), dropna=False) if subset else [((), inside)]
                for key, group in groups:
                    if group.empty:
                        continue
                    values: tuple[Any, ...] = key if isinstance(key, tuple) else (key,)
                    dims = frozenset(
                        (n, None if pd.isna(v) else v) for n, v in zip(subset, values, strict=True)
                    )
                    value = measure(group)
                    result[("day", moment, dims)] = None if pd.isna(value) else float(value)
        day += dt.timedelta(days=1)
    return result


def _kpis(source: str) -> list[KpiSpec]:
    return [
        make_kpi(
            name,
            source,
            measure=measure,
            filter=condition,
            window=window,
            dimensions=["region"],
            grains=["day"],
            timezone=BERLIN,
        )
        for name, (window, measure, condition, _) in CASES.items()
    ]


@pytest.fixture()
def windowed(warehouse: Warehouse) -> Any:
    source = make_source(unique("win"), timezone=BERLIN)
    # Unique names per test run: the KPI values table is shared by the session.
    suffix = unique("")
    kpis = [k.model_copy(update={"name": k.name + suffix}) for k in _kpis(source.name)]
    catalog = make_catalog([source], kpis)
    return source, catalog, suffix


@pytest.mark.parametrize("name", list(CASES))
def test_window_values_match_pandas_after_late_rows_and_a_correction(
    warehouse: Warehouse, windowed: Any, name: str
) -> None:
    source, catalog, suffix = windowed
    plan = plan_kpi(catalog, name + suffix)
    rows = _rows(list(CASES).index(name))
    create_clean(warehouse, source, rows)
    with statements_run() as seen:
        refresh_kpi(warehouse, plan, FIRST, DATA_LAST)
    assert len([s for s in seen if s.startswith(INSERT_MARKER)]) == 1
    assert_same_values(
        stored_values(warehouse, plan.name), _expected(rows, name, FIRST, DATA_LAST), name
    )

    # Late rows on two days (one of them the spring DST day) and a correction of an old row;
    # only the days the sensor would request are refreshed.
    late = [
        {**rows[0], "line_id": "late1", "at": dt.datetime(2025, 12, 30, 21, tzinfo=UTC)},
        {**rows[1], "line_id": "late2", "at": dt.datetime(2026, 3, 29, 7, tzinfo=UTC)},
    ]
    corrected = next(r for r in rows if r["at"].astimezone(ZONE).date() == dt.date(2026, 1, 15))
    table = clean_table(source)
    with warehouse.begin() as conn:
        insert_clean(conn, source, late)
        conn.execute(
            table.update()
            .where(table.c.line_id == corrected["line_id"])
            .values(qty=corrected["qty"] + 100, customer="c_new")
        )
    corrected.update(qty=corrected["qty"] + 100, customer="c_new")
    rows += late
    touched = {r["at"].astimezone(ZONE).date() for r in [*late, corrected]}
    days = refreshed_days(plan_catalog(catalog), plan.name, source.name, touched, DATA_LAST)
    for low, high in contiguous_ranges(days):
        refresh_kpi(warehouse, plan, low, high)
    assert_same_values(
        stored_values(warehouse, plan.name), _expected(rows, name, FIRST, DATA_LAST), name
    )


def test_a_23_hour_day_is_one_day_of_a_rolling_window(warehouse: Warehouse) -> None:
    source = make_source(unique("win_dst"), timezone=BERLIN)
    kpi = make_kpi(
        unique("lines_2d"),
        source.name,
        measure="count(*)",
        window={"rolling": 2},
        timezone=BERLIN,
    )
    plan = plan_kpi(make_catalog([source], [kpi]), kpi.name)
    # One row at 00:30 local on each of 28..31 March 2026 (29 March has 23 hours).
    create_clean(
        warehouse,
        source,
        [
            {"line_id": str(d), "at": dt.datetime(2026, 3, d, 0, 30, tzinfo=ZONE)}
            for d in range(28, 32)
        ],
    )
    refresh_kpi(warehouse, plan, dt.date(2026, 3, 28), dt.date(2026, 4, 1))
    stored = stored_values(warehouse, kpi.name)
    by_day = {
        start.astimezone(ZONE).date(): value
        for (_, start, dims), value in stored.items()
        if not dims
    }
    assert by_day == {
        dt.date(2026, 3, 28): 1,
        dt.date(2026, 3, 29): 2,
        dt.date(2026, 3, 30): 2,
        dt.date(2026, 3, 31): 2,
        dt.date(2026, 4, 1): 1,  # the window of 31 March and 1 April has one row (31 March)
    }
    # The BI view compares each day's window with the day before's.
    with warehouse.connect() as conn:
        view = conn.execute(
            sa.text(
                f"SELECT period_start_local, value, previous_value, previous_growth "
                f'FROM kpi."{kpi.name}" ORDER BY period_start'
            )
        ).all()
    assert [(r[0].date(), r[1], r[2]) for r in view] == [
        (dt.date(2026, 3, 28), 1, None),
        (dt.date(2026, 3, 29), 2, 1),
        (dt.date(2026, 3, 30), 2, 2),
        (dt.date(2026, 3, 31), 2, 2),
        (dt.date(2026, 4, 1), 1, 2),
    ]
    assert view[1][3] == 1 and view[2][3] == 0 and view[4][3] == Decimal("-0.5")


def test_days_a_late_row_refreshes_per_window_kind() -> None:
    source = make_source(unique("win_inv"), timezone=BERLIN)
    kpis = _kpis(source.name)
    derived = make_kpi("per_line_7d", source.name, derived="sum_7d / lines_mtd", timezone=BERLIN)
    plain = make_kpi("units", source.name, measure="sum(qty)", timezone=BERLIN)
    plans = plan_catalog(make_catalog([source], [*kpis, derived, plain]))
    today = dt.date(2026, 4, 12)

    def span(first: dt.date, last: dt.date) -> set[dt.date]:
        return {first + dt.timedelta(days=i) for i in range((last - first).days + 1)}

    def days(name: str, *touched: dt.date) -> set[dt.date]:
        return refreshed_days(plans, name, source.name, set(touched), today)

    late = dt.date(2026, 2, 20)
    assert days("units", late) == {late}
    assert days("sum_7d", late) == span(late, dt.date(2026, 2, 26))
    assert days("avg_28d", late) == span(late, dt.date(2026, 3, 19))
    assert days("lines_mtd", late) == span(late, dt.date(2026, 2, 28))
    assert days("qty_qtd", late) == span(late, dt.date(2026, 3, 31))
    assert days("customers_ytd", late) == span(late, dt.date(2026, 12, 31)) & span(late, today)
    assert days("max_all", dt.date(2024, 6, 1)) == span(dt.date(2024, 6, 1), today)
    # A derived KPI over window KPIs changes where its inputs do: the union of their days.
    assert days("per_line_7d", late) == span(late, dt.date(2026, 2, 28))
    # Today is the last day refreshed; a day after it (a clock ahead) refreshes nothing.
    assert days("sum_7d", dt.date(2026, 4, 10)) == span(dt.date(2026, 4, 10), today)
    assert days("sum_7d", dt.date(2026, 4, 13)) == set()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"grains": ["day", "month"]}, "has one value per local day: declare grains: [day]"),
        ({"semi_additive": {"take": "last"}}, "cannot be combined with semi_additive"),
    ],
)
def test_window_rules_are_checked_at_load(fields: dict[str, Any], message: str) -> None:
    source = make_source(unique("win_rules"))
    kpi = make_kpi("bad_window", source.name, measure="sum(qty)", window={"rolling": 7}, **fields)
    with pytest.raises(CatalogError) as error:
        plan_kpi(make_catalog([source], [kpi]), kpi.name)
    assert message in str(error.value)
    assert "window:" in str(error.value)


def test_window_declares_one_kind() -> None:
    with pytest.raises(ValueError, match="exactly one of rolling"):
        WindowSpec(rolling=7, to_date="month")
    with pytest.raises(ValueError, match="exactly one of rolling"):
        WindowSpec()
    with pytest.raises(ValueError):
        WindowSpec(rolling=1)


def test_sensor_requests_the_days_each_window_contains_and_says_why(
    warehouse: Warehouse, database_url: str
) -> None:
    source = make_source(unique("win_sensor"), timezone=BERLIN)
    names = {kind: unique(kind) for kind in ("units", "sum_7d", "mtd", "ytd", "all")}
    kpis = [
        make_kpi(names["units"], source.name, measure="sum(qty)", grains=["day", "month"]),
        make_kpi(names["sum_7d"], source.name, measure="sum(qty)", window={"rolling": 7}),
        make_kpi(names["mtd"], source.name, measure="count(*)", window={"to_date": "month"}),
        make_kpi(
            names["ytd"],
            source.name,
            measure="count_distinct(customer)",
            window={"to_date": "year"},
        ),
        make_kpi(names["all"], source.name, measure="count(*)", window={"to_date": "all"}),
    ]
    kpis = [k.model_copy(update={"timezone": BERLIN}) for k in kpis]
    built = build_kpi_definitions(make_catalog([source], kpis), start="2024-01-01")
    today = local_date(dt.datetime.now(UTC), BERLIN)
    late = today - dt.timedelta(days=40)
    at = dt.datetime.combine(late, dt.time(12), ZONE)
    create_clean(warehouse, source, [{"line_id": "x", "at": at, "customer": "c1", "qty": 3}])
    cursor = last_touched_id(warehouse)
    record_touched(warehouse, source.name, [at.astimezone(UTC)])

    assert built.sensor is not None
    result = built.sensor(
        dg.build_sensor_context(
            cursor=str(cursor),
            resources={"warehouse": WarehouseResource(database_url=database_url)},
            instance=dg.DagsterInstance.ephemeral(),
        )
    )
    assert isinstance(result, dg.SensorResult)
    # KPIs whose windows change the same days share a run (here the year and all to date, the
    # year's end being after today).
    requested: dict[str, tuple[str, str, str | None]] = {}
    priorities: dict[str, str] = {}
    for request in result.run_requests or []:
        assert isinstance(request, dg.RunRequest)
        low = request.partition_key or request.tags[RANGE_START_TAG]
        high = request.partition_key or request.tags[RANGE_END_TAG]
        for key in request.asset_selection or []:
            assert key.path[-1] not in requested
            requested[key.path[-1]] = (low, high, request.tags.get(REASON_TAG))
            priorities[key.path[-1]] = request.tags[PRIORITY_TAG]
    month_end = dt.date(late.year, late.month, 1) + dt.timedelta(days=32)
    month_end = month_end.replace(day=1) - dt.timedelta(days=1)
    expected = {
        names["units"]: (late, late),
        names["sum_7d"]: (late, late + dt.timedelta(days=6)),
        names["mtd"]: (late, min(month_end, today)),
        names["ytd"]: (late, min(dt.date(late.year, 12, 31), today)),
        names["all"]: (late, today),
    }
    assert {n: (r[0], r[1]) for n, r in requested.items()} == {
        n: (low.isoformat(), high.isoformat()) for n, (low, high) in expected.items()
    }
    assert requested[names["units"]][2] is None
    # The touched day itself is refreshed before the windows' later days, when runs wait.
    assert int(priorities[names["units"]]) > int(priorities[names["sum_7d"]])
    assert {priorities[names[k]] for k in names if k != "units"} == {priorities[names["ytd"]]}
    reason = requested[names["sum_7d"]][2]
    assert reason is not None
    assert reason.startswith(f"rows of {late} changed; their windows reach {late}..")
    assert f"{names['sum_7d']} (rolling 7 days)" in reason

    # The run rewrites exactly those days and records why.
    kpi_asset = next(a for a in built.assets if a.key.path[-1] == names["sum_7d"])
    low, high, _ = requested[names["sum_7d"]]
    run = dg.materialize(
        [kpi_asset],
        resources={"warehouse": WarehouseResource(database_url=database_url)},
        tags={RANGE_START_TAG: low, RANGE_END_TAG: high, REASON_TAG: reason},
    )
    assert run.success
    recorded = {
        e.materialization.metadata["reason"].value for e in run.get_asset_materialization_events()
    }
    assert recorded == {reason}
    stored = stored_values(warehouse, names["sum_7d"])
    assert sorted(start.astimezone(ZONE).date() for (_, start, _) in stored) == [
        late + dt.timedelta(days=i) for i in range(7)
    ]
    assert set(stored.values()) == {3}


def test_demo_catalog_has_a_rolling_and_a_year_to_date_kpi() -> None:
    demo = load_catalog(DEMO_CATALOG_DIR)
    plans = plan_catalog(demo)
    rolling, ytd = demo.kpis["revenue_28d"], demo.kpis["active_customers_ytd"]
    assert rolling.window == WindowSpec(rolling=28) and rolling.grains == ["day"]
    assert ytd.window == WindowSpec(to_date="year") and ytd.measure == "count_distinct(customer_id)"
    # A late order on 2026-02-20 (today 2026-04-12): 28 days of one, the rest of the year to
    # date of the other, the day itself for a per-period KPI of the same source.
    today, late = dt.date(2026, 4, 12), dt.date(2026, 2, 20)
    assert len(refreshed_days(plans, "revenue_28d", "orders", {late}, today)) == 28
    assert len(refreshed_days(plans, "active_customers_ytd", "orders", {late}, today)) == 52
    assert refreshed_days(plans, "net_revenue", "orders", {late}, today) == {late}
