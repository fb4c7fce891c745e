"""Derived KPIs across sources: revenue (orders) per support ticket (tickets).

Values are checked against pandas over the same rows, on days around Berlin's spring DST change,
with a day that has orders but no ticket (no denominator: NULL), a cell whose ticket count is 0
(a zero denominator: NULL), an input broken down by more dimensions than the derived KPI, and a
late ticket file that must refresh the derived KPI through the invalidation sensor.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import pytest

from analytics_pipelines.defs.kpis.factory import build_kpi_definitions, kpi_asset_key
from analytics_pipelines.lib.catalog import CatalogError
from analytics_pipelines.lib.kpi.engine import refresh_kpi
from analytics_pipelines.lib.kpi.plan import plan_kpi
from analytics_pipelines.lib.kpi.validation import kpi_problems
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import WarehouseResource
from analytics_pipelines_tests.test_kpi_support import (
    UTC,
    assert_same_values,
    create_clean,
    expected_values,
    insert_clean,
    last_touched_id,
    make_catalog,
    make_kpi,
    make_source,
    record_touched,
    stored_values,
    unique,
)

BERLIN = ZoneInfo("Europe/Berlin")
ZONE = "Europe/Berlin"
GRAINS = ["day", "month"]
DAYS = [dt.date(2026, 3, 28), dt.date(2026, 3, 29), dt.date(2026, 3, 30), dt.date(2026, 3, 31)]


def _at(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, 30), BERLIN).astimezone(UTC)


def _orders() -> list[dict[str, Any]]:
    rows = []
    for d, day in enumerate(DAYS):
        for i, region in enumerate(["north", "south", "north"]):
            rows.append(
                {
                    "line_id": f"o-{day}-{i}",
                    "at": _at(day, 1 + 2 * i),  # 01:30 and 03:30 stand either side of the DST gap
                    "region": region,
                    "qty": d + i + 1,
                    "price": Decimal("2.50"),
                }
            )
    return rows


def _tickets() -> list[dict[str, Any]]:
    """No ticket on 30 March (orders but no denominator); south's only ticket on the DST day is
    not escalated (an escalation count of 0 in a cell that exists)."""
    plan = {
        DAYS[0]: [("north", "mail", "escalated"), ("south", "phone", "escalated")],
        DAYS[1]: [("north", "mail", "escalated"), ("north", "phone", "open"), ("south", "mail", "open")],
        DAYS[3]: [("south", "phone", "escalated")],
    }  # fmt: skip
    return [
        {
            "line_id": f"t-{day}-{i}",
            "at": _at(day, 9 + i),
            "region": region,
            "channel": channel,
            "status": status,
        }
        for day, tickets in plan.items()
        for i, (region, channel, status) in enumerate(tickets)
    ]


class CrossSource:
    def __init__(self) -> None:
        self.orders = make_source(unique("xs_orders"))
        self.tickets = make_source(unique("xs_tickets"))
        common: dict[str, Any] = {"grains": GRAINS, "timezone": ZONE}
        self.revenue = make_kpi(
            unique("revenue"), self.orders.name, measure="sum(qty * price)",
            dimensions=["region"], **common,
        )  # fmt: skip
        self.escalations = make_kpi(
            unique("escalations"), self.tickets.name, measure="count(*)",
            filter="status = 'escalated'", dimensions=["region", "channel"], **common,
        )  # fmt: skip
        self.per_escalation = make_kpi(
            unique("revenue_per_escalation"), None,
            derived=f"{self.revenue.name} / {self.escalations.name}",
            dimensions=["region"], **common,
        )  # fmt: skip
        self.catalog = make_catalog(
            [self.orders, self.tickets], [self.revenue, self.escalations, self.per_escalation]
        )

    def refresh(self, warehouse: Warehouse, first: dt.date, last: dt.date) -> None:
        for kpi in (self.revenue, self.escalations, self.per_escalation):
            refresh_kpi(warehouse, plan_kpi(self.catalog, kpi.name), first, last)


@pytest.fixture
def cross() -> CrossSource:
    return CrossSource()


def _expected(orders: list[dict[str, Any]], tickets: list[dict[str, Any]]) -> dict[Any, Any]:
    """pandas: revenue per region-day and per day, divided by the escalations there; a cell
    exists where either input has one, and is NULL where the escalation count is 0 or absent."""
    common: dict[str, Any] = {"grains": GRAINS, "timezone": ZONE, "dimensions": ["region"]}
    orders_frame = pd.DataFrame(orders)
    revenue = expected_values(
        orders_frame,
        measure=lambda g: float((g["qty"] * g["price"].astype(float)).sum()),
        **common,
    )
    escalations = expected_values(
        pd.DataFrame(tickets),
        measure=len,
        keep=lambda g: g["status"] == "escalated",
        **common,
    )
    expected: dict[Any, Any] = {}
    for key in set(revenue) | set(escalations):
        numerator, denominator = revenue.get(key), escalations.get(key)
        expected[key] = None if numerator is None or not denominator else numerator / denominator
    return expected


def test_revenue_per_escalation_matches_pandas(warehouse: Warehouse, cross: CrossSource) -> None:
    orders, tickets = _orders(), _tickets()
    create_clean(warehouse, cross.orders, orders)
    create_clean(warehouse, cross.tickets, tickets)

    cross.refresh(warehouse, DAYS[0], DAYS[-1])

    stored = stored_values(warehouse, cross.per_escalation.name)
    expected = _expected(orders, tickets)
    assert_same_values(stored, expected, "revenue per escalation")
    # The input broken down by channel too contributes only at this KPI's breakdowns.
    assert all(set(dict(dims)) <= {"region"} for _, _, dims in stored)
    march30 = dt.datetime(2026, 3, 29, 22, tzinfo=UTC)  # Berlin midnight (summer time)
    assert stored[("day", march30, frozenset())] is None  # orders, no ticket at all
    dst_day = dt.datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert stored[("day", dst_day, frozenset({("region", "south")}))] is None  # 0 escalations
    assert stored[("day", dst_day, frozenset({("region", "north")}))] is not None


def test_a_late_ticket_file_refreshes_the_derived_kpi(
    warehouse: Warehouse, database_url: str, cross: CrossSource
) -> None:
    create_clean(warehouse, cross.orders, _orders())
    create_clean(warehouse, cross.tickets, _tickets())
    cross.refresh(warehouse, DAYS[0], DAYS[-1])
    cursor = last_touched_id(warehouse)

    # A late escalation for 30 March: that day now has a denominator.
    late = [
        {"line_id": "t-late", "at": _at(DAYS[2], 15), "region": "north", "channel": "mail",
         "status": "escalated"},
    ]  # fmt: skip
    with warehouse.begin() as conn:
        insert_clean(conn, cross.tickets, late)
    record_touched(warehouse, cross.tickets.name, [_at(DAYS[2], 15)])
    built = build_kpi_definitions(cross.catalog, start="2026-01-01")
    resources = {"warehouse": WarehouseResource(database_url=database_url)}
    assert built.sensor is not None
    result = built.sensor(
        dg.build_sensor_context(
            cursor=str(cursor), resources=resources, instance=dg.DagsterInstance.ephemeral()
        )
    )

    assert isinstance(result, dg.SensorResult)
    [request] = result.run_requests or []
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "2026-03-30"
    # The orders KPI is not touched by a ticket file; the derived KPI is.
    assert set(request.asset_selection or []) == {
        kpi_asset_key(cross.escalations.name),
        kpi_asset_key(cross.per_escalation.name),
    }
    run = dg.materialize(
        [a for a in built.assets if a.key in set(request.asset_selection or [])],
        partition_key=request.partition_key,
        resources=resources,
    )
    assert run.success
    stored = stored_values(warehouse, cross.per_escalation.name)
    assert_same_values(stored, _expected(_orders(), _tickets() + late), "after the late file")


def test_assets_of_a_cross_source_kpi_depend_on_both_inputs(cross: CrossSource) -> None:
    built = build_kpi_definitions(cross.catalog, start="2026-01-01")
    derived = next(a for a in built.assets if a.key == kpi_asset_key(cross.per_escalation.name))
    assert set(derived.asset_deps[derived.key]) == {
        kpi_asset_key(cross.revenue.name),
        kpi_asset_key(cross.escalations.name),
    }
    metadata = derived.metadata_by_key[derived.key]
    assert metadata["source"] == ", ".join(sorted([cross.orders.name, cross.tickets.name]))


def test_inputs_must_line_up_with_the_derived_kpi(cross: CrossSource) -> None:
    by_channel = make_kpi(
        unique("per_channel"), None, derived=f"{cross.revenue.name} / {cross.escalations.name}",
        dimensions=["channel"], grains=GRAINS, timezone=ZONE,
    )  # fmt: skip
    hourly = make_kpi(
        unique("hourly"), None, derived=f"{cross.revenue.name} * 2",
        grains=["hour", "day"], timezone=ZONE,
    )  # fmt: skip
    labelled = make_kpi(
        unique("labelled"), cross.orders.name, derived=f"{cross.escalations.name} * 2",
        grains=["day"], timezone=ZONE,
    )  # fmt: skip
    catalog = make_catalog(
        [cross.orders, cross.tickets],
        [cross.revenue, cross.escalations, by_channel, hourly, labelled],
    )
    assert kpi_problems(by_channel, catalog.sources, catalog.kpis) == [
        f"dimensions: channel not a dimension of input {cross.revenue.name!r} (it has: region); "
        "a derived KPI may use only dimensions all its inputs have"
    ]
    assert kpi_problems(hourly, catalog.sources, catalog.kpis) == [
        f"derived: {cross.revenue.name!r} has no hour values (grains: day, month)"
    ]
    assert kpi_problems(labelled, catalog.sources, catalog.kpis) == [
        f"source: a derived KPI is computed from its inputs' sources ({cross.tickets.name}); "
        "remove source or name one of them"
    ]
    with pytest.raises(CatalogError, match="not a dimension of input"):
        plan_kpi(catalog, by_channel.name)
