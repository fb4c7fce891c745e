"""Conditional aggregates (`AGG(...) where CONDITION`) against the real PostgreSQL.

Every value is compared with pandas over the same rows, on generated data spanning the spring DST
change of Europe/Berlin (2026-03-29, 23 hours), with a cell whose aggregate condition matches no
row, a cell whose denominator is 0, late rows for an old day, and both ways a refresh computes
coarser periods (rolled up from partial aggregates per finest period, or from every row).
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from analytics_pipelines.lib.catalog import CatalogError, ColumnSpec, load_catalog
from analytics_pipelines.lib.catalog.models import Grain
from analytics_pipelines.lib.kpi.engine import refresh_kpi
from analytics_pipelines.lib.kpi.periods import covering_window
from analytics_pipelines.lib.kpi.plan import KpiPlan, plan_kpi
from analytics_pipelines.lib.kpi.rollup import can_roll_up
from analytics_pipelines.lib.kpi.statements import insert_values
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR
from analytics_pipelines.lib.tables import kpi_values
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_kpi_support import (
    UTC,
    assert_same_values,
    create_clean,
    expected_values,
    insert_clean,
    make_catalog,
    make_kpi,
    make_source,
    stored_values,
    unique,
)

BERLIN = ZoneInfo("Europe/Berlin")
FIRST, LAST = dt.date(2026, 3, 16), dt.date(2026, 4, 8)
DST_DAY = dt.date(2026, 3, 29)
NO_MATCH_DAY = DST_DAY  # region west: placed store lines only (no return, nothing on the web)
NO_DENOMINATOR_DAY = dt.date(2026, 3, 28)  # region west: cancelled lines only
GRAINS: list[Grain] = ["hour", "day", "week", "month"]


def _local(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), BERLIN).astimezone(UTC)


def _line(line_id: str, at: dt.datetime, **values: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "customer": "c0",
        "channel": "store",
        "qty": 1,
        "price": Decimal("1.00"),
        "status": "placed",
        "paid": True,
    }
    return {"line_id": line_id, "at": at, **defaults, **values}


def _rows(seed: int = 13, count: int = 700) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = _local(FIRST, 0)
    seconds = int((_local(LAST + dt.timedelta(days=1), 0) - start).total_seconds())
    rows = [
        _line(
            f"r{i}",
            start + dt.timedelta(seconds=rng.randrange(seconds)),
            customer=f"c{rng.randrange(30)}",
            region=rng.choice(["north", "south", "east"]),
            channel=rng.choice(["web", "store"]),
            qty=rng.randrange(1, 12),
            price=Decimal(rng.randrange(50, 5000)) / 100,
            status=rng.choice(["placed", "shipped", "returned", "cancelled"]),
            paid=rng.choice([True, False, None]),
        )
        for i in range(count)
    ]
    # Either side of the missing hour 02:00-03:00 of the DST day.
    rows += [
        _line("w1", _local(NO_MATCH_DAY, 1, 30), region="west", qty=2),
        _line("w2", _local(NO_MATCH_DAY, 3, 30), region="west", qty=3),
        _line("w3", _local(NO_DENOMINATOR_DAY, 10), region="west", status="cancelled"),
        _line("w4", _local(NO_DENOMINATOR_DAY, 11), region="west", status="cancelled"),
    ]
    return rows


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    frame["price"] = frame["price"].astype(float)
    return frame


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else numerator / denominator


def _returned_qty_or_null(g: pd.DataFrame) -> float | None:
    returned = g["qty"][g["status"] == "returned"]
    return None if returned.empty else float(returned.sum())


# (measure, KPI filter, fill_nulls_with, pandas over the rows the KPI filter keeps, that filter)
CASES: list[tuple[str, str | None, Decimal | None, Any, Any]] = [
    ("(count(*) where status = 'returned') / count(*)", "status != 'cancelled'", Decimal(0),
     lambda g: _ratio((g["status"] == "returned").sum(), len(g)),
     lambda f: f["status"] != "cancelled"),
    ("sum(qty * price) where channel = 'web'", None, Decimal(0),
     lambda g: (g["qty"] * g["price"])[g["channel"] == "web"].sum(), None),
    ("sum(qty) where status = 'returned'", None, None, _returned_qty_or_null, None),
    ("(sum(qty) where status = 'returned') / (sum(qty) where status in ('placed', 'shipped'))",
     None, Decimal(0),
     lambda g: _ratio(g["qty"][g["status"] == "returned"].sum(),
                      g["qty"][g["status"].isin(["placed", "shipped"])].sum()), None),
    ("(avg(price) where paid) - (max(qty) where region = 'north') + (min(price) where not paid)",
     "status != 'returned'", Decimal(0),
     lambda g: g["price"][g["paid"] == True].mean()  # noqa: E712
     - g["qty"][g["region"] == "north"].max() + g["price"][g["paid"] == False].min(),  # noqa: E712
     lambda f: f["status"] != "returned"),
    ("count_distinct(customer) where status = 'returned'", "channel = 'web'", Decimal(0),
     lambda g: g["customer"][g["status"] == "returned"].nunique(),
     lambda f: f["channel"] == "web"),
]  # fmt: skip


def _plan(
    source_rows: list[dict[str, Any]], warehouse: Warehouse, grains: list[Grain], **kpi: Any
) -> KpiPlan:
    source = make_source(unique("kpi_cond"))
    create_clean(warehouse, source, source_rows)
    spec = make_kpi(
        unique("cond"),
        source.name,
        dimensions=["region", "channel"],
        grains=grains,
        timezone="Europe/Berlin",
        **kpi,
    )
    return plan_kpi(make_catalog([source], [spec]), spec.name)


def _recompute_from_every_row(warehouse: Warehouse, plan: KpiPlan) -> None:
    windows = {grain: covering_window(grain, FIRST, LAST) for grain in plan.kpi.grains}
    with warehouse.begin() as conn:
        conn.execute(kpi_values.delete().where(kpi_values.c.kpi == plan.name))
        for statement in insert_values(plan, windows, roll_up=False):
            conn.execute(statement)


@pytest.mark.parametrize(("measure", "kpi_filter", "fill", "compute", "keep"), CASES)
def test_conditional_aggregates_match_pandas_rolled_up_and_from_every_row(
    warehouse: Warehouse,
    measure: str,
    kpi_filter: str | None,
    fill: Decimal | None,
    compute: Any,
    keep: Any,
) -> None:
    rows = _rows()
    plan = _plan(rows, warehouse, GRAINS, measure=measure, filter=kpi_filter, fill_nulls_with=fill)
    expected = expected_values(
        _frame(rows),
        grains=GRAINS,
        timezone="Europe/Berlin",
        dimensions=["region", "channel"],
        measure=compute,
        keep=keep,
    )
    assert plan.measure is not None
    rolls_up = can_roll_up(plan.measure)
    assert rolls_up is ("count_distinct" not in measure)

    refresh_kpi(warehouse, plan, FIRST, LAST)
    refreshed = stored_values(warehouse, plan.name)
    assert_same_values(refreshed, expected, f"{measure} (roll_up={rolls_up})")

    _recompute_from_every_row(warehouse, plan)
    from_rows = stored_values(warehouse, plan.name)
    assert_same_values(from_rows, expected, f"{measure} from every row")
    # Same cells, same numbers, same digits, whichever way the coarser periods were computed.
    assert {k: str(v) for k, v in refreshed.items()} == {k: str(v) for k, v in from_rows.items()}


def _day_cell(day: dt.date, **dimensions: str) -> tuple[str, dt.datetime, frozenset]:
    return ("day", _local(day, 0), frozenset(dimensions.items()))


def test_a_rate_in_one_measure_is_zero_without_matches_and_null_without_denominator(
    warehouse: Warehouse,
) -> None:
    rows = _rows()
    rate = _plan(
        rows,
        warehouse,
        ["day", "month"],
        measure="(count(*) where status = 'returned') / count(*)",
        filter="status != 'cancelled'",
    )
    web = _plan(
        rows, warehouse, ["day"], measure="sum(qty * price) where channel = 'web'"
    )  # fill_nulls_with defaults to 0
    returned_qty = _plan(
        rows,
        warehouse,
        ["day"],
        measure="sum(qty) where status = 'returned'",
        fill_nulls_with=None,
    )
    for plan in (rate, web, returned_qty):
        refresh_kpi(warehouse, plan, FIRST, LAST)

    no_match = _day_cell(NO_MATCH_DAY, region="west")
    no_denominator = _day_cell(NO_DENOMINATOR_DAY, region="west")
    # West on the DST day: two placed store lines, no return and nothing on the web.
    assert stored_values(warehouse, rate.name)[no_match] == 0
    assert stored_values(warehouse, web.name)[no_match] == 0
    assert stored_values(warehouse, returned_qty.name)[no_match] is None
    # West the day before: cancelled lines only, which the KPI's filter drops: 0 / 0 is NULL.
    assert no_denominator in stored_values(warehouse, rate.name)
    assert stored_values(warehouse, rate.name)[no_denominator] is None
    # A day without any row of west has no cell at all.
    assert _day_cell(dt.date(2026, 3, 30), region="west") not in stored_values(warehouse, rate.name)
    # The DST day is 23 hours long and its value counts every one of its lines.
    frame = _frame(rows)
    local_day = frame["at"].dt.tz_convert("Europe/Berlin").dt.date
    on_day = frame[(local_day == DST_DAY) & (frame["status"] != "cancelled")]
    want = (on_day["status"] == "returned").sum() / len(on_day)
    got = stored_values(warehouse, rate.name)[_day_cell(DST_DAY)]
    assert got is not None and abs(float(got) - want) < 1e-12


def test_late_rows_change_exactly_their_day_and_its_coarser_periods(
    warehouse: Warehouse,
) -> None:
    rows = _rows(seed=29, count=400)
    grains: list[Grain] = ["day", "week", "month"]
    measure = "(count(*) where status = 'returned') / count(*)"
    plan = _plan(rows, warehouse, grains, measure=measure)
    refresh_kpi(warehouse, plan, FIRST, LAST)
    before = stored_values(warehouse, plan.name)

    late_day = dt.date(2026, 3, 24)  # a Tuesday: its week starts on Monday the 23rd
    late = [
        _line("late1", _local(late_day, 9), region="north", channel="web", status="returned"),
        _line("late2", _local(late_day, 10), region="north", channel="web", status="returned"),
        _line("late3", _local(late_day, 23, 30), region="west", channel="web", status="returned"),
    ]
    with warehouse.begin() as conn:
        insert_clean(conn, plan.source, late)
    refresh_kpi(warehouse, plan, late_day, late_day)
    after = stored_values(warehouse, plan.name)

    expected = expected_values(
        _frame(rows + late),
        grains=grains,
        timezone="Europe/Berlin",
        dimensions=["region", "channel"],
        measure=lambda g: _ratio((g["status"] == "returned").sum(), len(g)),
    )
    assert_same_values(after, expected, "after the late rows")
    refreshed_periods = {
        ("day", _local(late_day, 0)),
        ("week", _local(dt.date(2026, 3, 23), 0)),
        ("month", _local(dt.date(2026, 3, 1), 0)),
    }
    changed = {key for key in after if before.get(key, "absent") != after[key]}
    assert changed, "the late rows changed nothing"
    assert {(grain, start) for grain, start, _ in changed} == refreshed_periods
    # West had no line on the 24th: its cell appears, a rate of 1 (one line, one return).
    assert _day_cell(late_day, region="west") not in before
    assert after[_day_cell(late_day, region="west")] == 1


def _allowed_status_source() -> Any:
    source = make_source(unique("kpi_cond_allowed"))
    columns = [
        c
        if c.name != "status"
        else ColumnSpec(name="status", allowed_values=["placed", "returned", "cancelled"])
        for c in source.columns
    ]
    return source.model_copy(update={"columns": columns})


def test_a_where_literal_outside_allowed_values_is_refused_with_a_suggestion() -> None:
    source = _allowed_status_source()
    typo = make_kpi(
        unique("typo"), source.name, measure="(count(*) where status = 'retuned') / count(*)"
    )
    listed = make_kpi(
        unique("listed"),
        source.name,
        measure="sum(qty) where status in ('placed', 'canceled')",
        filter="status != 'placd'",
    )
    fine = make_kpi(
        unique("fine"), source.name, measure="(count(*) where status = 'returned') / count(*)"
    )
    catalog = make_catalog([source], [typo, listed, fine])

    with pytest.raises(CatalogError) as refused:
        plan_kpi(catalog, typo.name)
    assert (
        "measure: 'retuned' is not an allowed value of status (placed, returned, cancelled) "
        "(did you mean 'returned'?)"
    ) in str(refused.value)
    with pytest.raises(CatalogError) as both:
        plan_kpi(catalog, listed.name)
    problems = both.value.problems
    assert any("measure: 'canceled' is not an allowed value" in p for p in problems), problems
    assert any("filter: 'placd' is not an allowed value" in p for p in problems), problems
    assert plan_kpi(catalog, fine.name).measure is not None


def test_catalog_validate_names_a_where_typo_and_a_misplaced_where(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG_DIR, catalog)
    sales = catalog / "kpis" / "sales.yaml"
    text = sales.read_text()
    rate = "measure: (count(*) where status = 'returned') / count(*)"
    assert rate in text
    text = text.replace(rate, "measure: (count(*) where status = 'retruned') / count(*)")
    text = text.replace(
        "measure: sum(quantity * unit_price) - sum(discount)",
        "measure: sum(quantity * unit_price where status = 'placed') - sum(discount)",
    )
    sales.write_text(text)

    with pytest.raises(CatalogError) as refused:
        load_catalog(catalog)
    message = str(refused.value)
    assert "kpi return_rate: measure: 'retruned' is not an allowed value of status" in message
    assert "did you mean 'returned'?" in message
    assert "kpi net_revenue: measure: at position 26: 'where' inside the parentheses of sum()" in (
        message
    )


def test_the_demo_return_rate_is_returned_lines_over_all_lines(warehouse: Warehouse) -> None:
    demo = load_catalog(DEMO_CATALOG_DIR)
    assert "return_rate_lines" not in demo.kpis
    source = demo.sources["orders"].model_copy(update={"name": unique("orders")})
    kpi = demo.kpis["return_rate"].model_copy(
        update={"name": unique("return_rate"), "source": source.name}
    )
    assert kpi.unit == "share" and kpi.measure is not None and kpi.filter is None
    rng = random.Random(3)
    rows = [
        {
            "order_id": f"ORD-{i:08d}",
            "line_no": 1,
            "ordered_at": _local(DST_DAY, 0) + dt.timedelta(minutes=rng.randrange(23 * 60)),
            "customer_id": f"C{i % 7}",
            "region": rng.choice(["north", "south"]),
            "channel": "web",
            "product_sku": "SKU1",
            "quantity": 1,
            "unit_price": Decimal("9.99"),
            "status": rng.choice(["placed", "shipped", "returned", "cancelled"]),
        }
        for i in range(60)
    ]
    create_clean(warehouse, source, rows)
    plan = plan_kpi(make_catalog([source], [kpi]), kpi.name)
    refresh_kpi(warehouse, plan, DST_DAY, DST_DAY)

    stored = stored_values(warehouse, kpi.name)
    for region in (None, "north", "south"):
        lines = [r for r in rows if region is None or r["region"] == region]
        want = sum(r["status"] == "returned" for r in lines) / len(lines)
        dims = frozenset() if region is None else frozenset({("region", region)})
        got = stored[("day", _local(DST_DAY, 0), dims)]
        assert got is not None and abs(float(got) - want) < 1e-12, (region, got, want)
