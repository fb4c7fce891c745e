"""Lookup dimensions: orders sliced by the segment of their customer, held in a reference source.

Files go the ingest path (landing folder -> raw -> clean); values are compared with pandas
(a left merge of the orders with the customers, then groupby) on days around the spring DST
change in Europe/Berlin, with an order whose customer the reference does not know (NULL segment)
and one without a customer. A customer who moves segment moves with all of their past orders
(current-version semantics) once the sensor has refreshed the periods holding their orders.
"""

from __future__ import annotations

import datetime as dt
import random
import textwrap
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import polars as pl
import pytest
import sqlalchemy as sa

from analytics_pipelines.cli import main
from analytics_pipelines.defs.clean.assets import build_clean_asset
from analytics_pipelines.defs.kpis.factory import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    build_kpi_definitions,
    kpi_asset_key,
)
from analytics_pipelines.lib.catalog import CatalogError, ColumnSpec, SourceSpec, load_catalog
from analytics_pipelines.lib.catalog.models import KpiSpec, LookupSpec
from analytics_pipelines.lib.clean import FusedClean, clean_pending
from analytics_pipelines.lib.demo import generate_demo
from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.kpi.engine import refresh_kpi
from analytics_pipelines.lib.kpi.invalidation import SensorCursor
from analytics_pipelines.lib.kpi.plan import plan_kpi
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR
from analytics_pipelines.lib.storage import LocalFolderStore
from analytics_pipelines.lib.tables import touched_periods
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import WarehouseResource
from analytics_pipelines_tests.test_kpi_cli import write_catalog
from analytics_pipelines_tests.test_kpi_support import (
    assert_same_values,
    expected_values,
    last_touched_id,
    make_catalog,
    make_kpi,
    stored_values,
    unique,
)

BERLIN = "Europe/Berlin"
# 2026-03-29 has 23 hours in Berlin; orders fall on the days either side too.
DAYS = [dt.date(2026, 3, 27) + dt.timedelta(days=i) for i in range(5)]
SEGMENT = "customer.segment"

# -- catalog validation ------------------------------------------------------------------------

SOURCES = """
sources:
  - name: customers
    kind: reference
    value_chain: sales
    landing_prefix: landing/customers
    format: csv
    columns:
      - {name: customer_id, type: string, required: true}
      - {name: segment, type: string}
    primary_key: [customer_id]
  - name: orders
    value_chain: sales
    landing_prefix: landing/orders
    format: csv
    columns:
      - {name: order_id, type: string, required: true}
      - {name: ordered_at, type: timestamp, required: true}
      - {name: customer_id, type: string}
      - {name: region, type: string}
    primary_key: [order_id]
    event_time: ordered_at
    lookups:
      - {name: customer, source: customers, key: {customer_id: customer_id}}
"""

KPIS = """
kpis:
  - name: orders_by_segment
    value_chain: sales
    description: Orders per customer segment.
    source: orders
    measure: count(*)
    dimensions: [region, customer.segment]
"""


def _catalog_dir(tmp_path: Path, sources: str = SOURCES, kpis: str = KPIS) -> Path:
    (tmp_path / "sources").mkdir(parents=True)
    (tmp_path / "kpis").mkdir()
    (tmp_path / "sources" / "all.yaml").write_text(textwrap.dedent(sources))
    (tmp_path / "kpis" / "all.yaml").write_text(textwrap.dedent(kpis))
    return tmp_path


def _problems(tmp_path: Path, sources: str = SOURCES, kpis: str = KPIS) -> str:
    with pytest.raises(CatalogError) as refused:
        load_catalog(_catalog_dir(tmp_path, sources, kpis))
    return str(refused.value)


def test_a_valid_lookup_catalog_loads_and_plans(tmp_path: Path) -> None:
    catalog = load_catalog(_catalog_dir(tmp_path))
    assert catalog.sources["customers"].event_time is None
    plan = plan_kpi(catalog, "orders_by_segment")
    assert set(plan.references) == {"customer"}
    assert [(s.name, lookup.name) for s, lookup in catalog.lookups_of("customers")] == [
        ("orders", "customer")
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            (KPIS, "customer.segment", "customer.segmnet"),
            "kpi orders_by_segment: dimensions: 'customer.segmnet': 'segmnet' is not a column "
            "of reference source customers (did you mean 'segment'?)",
        ),
        (
            (KPIS, "customer.segment", "custmer.segment"),
            "dimensions: 'custmer.segment': source orders declares no lookup 'custmer' "
            "(lookups: customer) (did you mean 'customer'?)",
        ),
        (
            (KPIS, "customer.segment", "segment"),
            "dimensions: 'segment' is not a column of source orders "
            "(did you mean 'customer.segment'?)",
        ),
        (
            (SOURCES, "source: customers, key", "source: custmers, key"),
            "source orders: lookups: lookup customer: unknown source 'custmers' "
            "(did you mean 'customers'?)",
        ),
        (
            (SOURCES, "key: {customer_id: customer_id}", "key: {region: customer_id}"),
            None,  # a string key column of another name is fine: mapped, same type
        ),
        (
            (SOURCES, "key: {customer_id: customer_id}", "key: {customer_id: segment}"),
            "lookup customer: key must map columns of orders to the whole primary key of "
            "customers (customer_id), not (segment)",
        ),
        (
            (SOURCES, "key: {customer_id: customer_id}", "key: {ordered_at: customer_id}"),
            "lookup customer: key: orders.ordered_at is timestamp but customers.customer_id "
            "is string; the types must match",
        ),
        (
            (SOURCES, "key: {customer_id: customer_id}", "key: {customer_no: customer_id}"),
            "entry 2 (orders): lookup customer: key names undeclared columns: customer_no",
        ),
    ],
)
def test_lookup_mistakes_are_refused_with_where_and_why(
    tmp_path: Path, change: tuple[str, str, str], message: str | None
) -> None:
    text, old, new = change
    assert old in text
    sources = SOURCES.replace(old, new) if text is SOURCES else SOURCES
    kpis = KPIS.replace(old, new) if text is KPIS else KPIS
    if message is None:
        load_catalog(_catalog_dir(tmp_path, sources, kpis))
        return
    assert message in _problems(tmp_path, sources, kpis)


def test_a_lookup_of_an_events_source_and_reference_misuse_are_refused(tmp_path: Path) -> None:
    # orders looks up itself: not a reference.
    self_lookup = SOURCES.replace("source: customers, key", "source: orders, key").replace(
        "key: {customer_id: customer_id}", "key: {order_id: order_id}"
    )
    assert (
        "lookup customer: source orders is not a reference (declare it with kind: reference"
        in _problems(tmp_path / "a", self_lookup)
    )
    # A reference has no event time (refused, not ignored), and no KPI of its own.
    timed = SOURCES.replace(
        "    primary_key: [customer_id]\n",
        "    primary_key: [customer_id]\n    event_time: segment\n",
    )
    assert (
        "event_time: not allowed on a reference source (a reference has no event time: the "
        "newest version of each key wins)" in _problems(tmp_path / "b", timed)
    )
    on_reference = KPIS.replace("source: orders", "source: customers").replace(
        "[region, customer.segment]", "[segment]"
    )
    assert "source: customers is a reference source (no event time, so no periods)" in (
        _problems(tmp_path / "c", kpis=on_reference)
    )
    # An events source still needs its event time.
    untimed = SOURCES.replace("    event_time: ordered_at\n", "")
    assert "event_time is required" in _problems(tmp_path / "d", untimed)
    # Two dimensions that would be the same view column.
    clash = SOURCES.replace(
        "      - {name: region, type: string}\n",
        "      - {name: region, type: string}\n      - {name: customer_segment, type: string}\n",
    )
    clashing = KPIS.replace("[region, customer.segment]", "[customer_segment, customer.segment]")
    assert (
        "'customer_segment' and 'customer.segment' would both be column 'customer_segment' of "
        "the view kpi.orders_by_segment" in _problems(tmp_path / "e", clash, clashing)
    )


# -- values through the ingest path --------------------------------------------------------------


def _sources(segments: list[str] | None = None) -> tuple[SourceSpec, SourceSpec]:
    """The customers reference (`segments`: its allowed segments, if any) and the orders."""
    suffix = uuid.uuid4().hex[:8]
    customers = SourceSpec(
        name=f"customers_{suffix}",
        kind="reference",
        value_chain="test_chain",
        landing_prefix=f"landing/customers_{suffix}",
        format="csv",
        columns=[
            ColumnSpec(name="customer_no", type="string", required=True),
            ColumnSpec(name="segment", type="string", allowed_values=segments),
        ],
        primary_key=["customer_no"],
    )
    orders = SourceSpec(
        name=f"orders_{suffix}",
        value_chain="test_chain",
        landing_prefix=f"landing/orders_{suffix}",
        format="csv",
        columns=[
            ColumnSpec(name="order_id", type="string", required=True),
            ColumnSpec(name="at", type="timestamp", required=True),
            ColumnSpec(name="customer_id", type="string"),
            ColumnSpec(name="region", type="string"),
            ColumnSpec(name="qty", type="integer"),
        ],
        primary_key=["order_id"],
        event_time="at",
        timezone=BERLIN,
        lookups=[
            LookupSpec(name="customer", source=customers.name, key={"customer_id": "customer_no"})
        ],
    )
    return customers, orders


CUSTOMERS = {f"C{i:02d}": segment for i, segment in enumerate(["retail", "wholesale", "vip"] * 3)}


def _orders(seed: int, days: list[dt.date], per_day: int, prefix: str) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    zone = ZoneInfo(BERLIN)
    for day in days:
        for i in range(per_day):
            local = dt.datetime.combine(day, dt.time(0), zone) + dt.timedelta(
                minutes=rng.randrange(24 * 60)
            )
            # Unknown to the reference (C99), and no customer at all, besides known ones.
            customer = rng.choice([*CUSTOMERS, "C99", ""])
            rows.append(
                {
                    "order_id": f"{prefix}-{day}-{i}",
                    "at": local.astimezone(dt.UTC),
                    "customer_id": customer or None,
                    "region": rng.choice(["north", "south"]),
                    "qty": rng.randint(1, 9),
                }
            )
    return rows


def _orders_csv(rows: list[dict[str, Any]]) -> bytes:
    lines = ["order_id,at,customer_id,region,qty"]
    for r in rows:
        lines.append(
            f"{r['order_id']},{r['at'].isoformat()},{r['customer_id'] or ''},{r['region']},{r['qty']}"
        )
    return ("\n".join(lines) + "\n").encode()


def _customers_csv(customers: dict[str, str | None]) -> bytes:
    lines = ["customer_no,segment", *(f"{k},{v or ''}" for k, v in customers.items())]
    return ("\n".join(lines) + "\n").encode()


def _deliver(
    store: LocalFolderStore,
    warehouse: Warehouse,
    source: SourceSpec,
    name: str,
    body: bytes,
    lookups: Any = (),
) -> Any:
    store.write(f"{source.landing_prefix}{name}", body)
    # As the landing sensor's runs do: a CSV is cleaned while it loads where the fast path can
    # (a reference source is left to the SQL clean step, which compares it before and after).
    load_pending(source, store, warehouse, clean_while_loading=FusedClean)
    return clean_pending(warehouse, source, lookups)


def _expected(
    orders: list[dict[str, Any]], customers: dict[str, str | None], measure: str
) -> dict[Any, float | None]:
    frame = pd.DataFrame(orders)
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    reference = pd.DataFrame({"customer_id": list(customers), SEGMENT: list(customers.values())})
    joined = frame.merge(reference, on="customer_id", how="left")
    joined[SEGMENT] = joined[SEGMENT].astype(object).where(joined[SEGMENT].notna(), None)

    def value(group: pd.DataFrame) -> Any:
        if measure == "distinct":
            return group["customer_id"].nunique()
        return len(group) if measure == "count" else group["qty"].sum()

    return expected_values(
        joined,
        grains=["day", "month"],
        timezone=BERLIN,
        dimensions=["region", SEGMENT],
        measure=value,
    )


class World:
    def __init__(
        self, warehouse: Warehouse, store: LocalFolderStore, segments: list[str] | None = None
    ) -> None:
        self.warehouse, self.store = warehouse, store
        self.customers, self.orders = _sources(segments)
        by_region_and_segment = ["region", SEGMENT]
        self.count = self._kpi("orders_by_segment", "count(*)", by_region_and_segment)
        self.qty = self._kpi("qty_by_segment", "sum(qty)", [SEGMENT])
        self.buyers = self._kpi(
            "buyers_by_segment", "count_distinct(customer_id)", by_region_and_segment
        )
        self.kpis = [self.count, self.qty, self.buyers]
        self.catalog = make_catalog([self.customers, self.orders], self.kpis)
        self.lookups = self.catalog.lookups_of(self.customers.name)

    def _kpi(self, prefix: str, measure: str, dimensions: list[str]) -> KpiSpec:
        return make_kpi(
            unique(prefix),
            self.orders.name,
            measure=measure,
            dimensions=dimensions,
            grains=["day", "month"],
            timezone=BERLIN,
        )

    def deliver_customers(self, name: str, customers: dict[str, str | None]) -> Any:
        return _deliver(
            self.store,
            self.warehouse,
            self.customers,
            name,
            _customers_csv(customers),
            self.lookups,
        )

    def deliver_orders(self, name: str, rows: list[dict[str, Any]]) -> Any:
        return _deliver(self.store, self.warehouse, self.orders, name, _orders_csv(rows))

    def start(self, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The customers, then the orders, delivered and cleaned; the KPIs computed."""
        self.deliver_customers("customers.csv", dict(CUSTOMERS))
        self.deliver_orders("orders-1.csv", orders)
        self.refresh()
        return orders

    def sensor_cursor(self) -> str:
        """A KPI sensor cursor that has seen every touched period of the orders so far."""
        return (
            SensorCursor().advanced({self.orders.name: last_touched_id(self.warehouse)}).serialise()
        )

    def refresh(self) -> None:
        for kpi in self.kpis:
            refresh_kpi(self.warehouse, plan_kpi(self.catalog, kpi.name), DAYS[0], DAYS[-1])

    def check(self, orders: list[dict[str, Any]], customers: dict[str, str | None]) -> None:
        assert_same_values(
            stored_values(self.warehouse, self.count.name),
            _expected(orders, customers, "count"),
            "count by region and segment",
        )
        assert_same_values(
            stored_values(self.warehouse, self.buyers.name),
            _expected(orders, customers, "distinct"),
            "distinct customers by region and segment (text compared bytewise)",
        )
        # The qty KPI has the segment alone: keep only the subsets that it has.
        expected_qty = {
            key: value
            for key, value in _expected(orders, customers, "sum").items()
            if all(name == SEGMENT for name, _ in key[2])
        }
        assert_same_values(
            stored_values(self.warehouse, self.qty.name), expected_qty, "qty by segment"
        )


def test_values_per_segment_match_pandas_with_unknown_and_missing_customers(
    warehouse: Warehouse, local_store: LocalFolderStore
) -> None:
    world = World(warehouse, local_store)
    orders = world.start(_orders(7, DAYS, 30, "a"))
    world.check(orders, dict(CUSTOMERS))

    stored = stored_values(warehouse, world.count.name)
    # Orders of C99 (not in the reference) and without a customer: a real NULL segment, apart
    # from the total over all segments.
    march = ("month", dt.datetime(2026, 2, 28, 23, tzinfo=dt.UTC))
    unknown = sum(1 for o in orders if o["customer_id"] not in CUSTOMERS)
    assert unknown > 0
    assert stored[(*march, frozenset({(SEGMENT, None)}))] == unknown
    assert stored[(*march, frozenset())] == len(orders)
    # The DST day is the 23 hours from 2026-03-28 23:00 UTC.
    dst_day = ("day", dt.datetime(2026, 3, 28, 23, tzinfo=dt.UTC))
    on_dst_day = [o for o in orders if o["at"].astimezone(ZoneInfo(BERLIN)).date() == DAYS[2]]
    assert stored[(*dst_day, frozenset())] == len(on_dst_day)

    # The BI view names the dimension customer_segment.
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.text(
                f'SELECT customer_segment, value FROM kpi."{world.qty.name}" '
                "WHERE grain = 'month' AND breakdown = ARRAY['customer.segment']"
            )
        ).all()
    by_segment = {segment: value for segment, value in rows}
    want: dict[str | None, int] = {}
    for o in orders:
        segment = CUSTOMERS.get(o["customer_id"] or "")
        want[segment] = want.get(segment, 0) + o["qty"]
    assert by_segment == {k: Decimal(v) for k, v in want.items()}


def _sensor_tick(world: World, database_url: str, cursor: str) -> Any:
    built = build_kpi_definitions(world.catalog, start="2026-01-01")
    assert built.sensor is not None
    context = dg.build_sensor_context(
        cursor=cursor,
        resources={"warehouse": WarehouseResource(database_url=database_url)},
        instance=dg.DagsterInstance.ephemeral(),
    )
    return built.sensor(context)


def _sensor_requests(world: World, database_url: str, cursor: str) -> tuple[Any, set[str]]:
    result = _sensor_tick(world, database_url, cursor)
    days: set[str] = set()
    assert isinstance(result, dg.SensorResult)
    for request in result.run_requests or []:
        assert isinstance(request, dg.RunRequest)
        assert set(request.asset_selection or []) == {kpi_asset_key(k.name) for k in world.kpis}
        if request.partition_key:
            days.add(request.partition_key)
        else:
            first = dt.date.fromisoformat(request.tags[RANGE_START_TAG])
            last = dt.date.fromisoformat(request.tags[RANGE_END_TAG])
            days |= {
                (first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)
            }
    return result, days


def _local_days(orders: list[dict[str, Any]], customer: str) -> set[str]:
    zone = ZoneInfo(BERLIN)
    return {
        o["at"].astimezone(zone).date().isoformat() for o in orders if o["customer_id"] == customer
    }


def test_a_reference_change_refreshes_exactly_the_periods_of_the_customers_orders(
    warehouse: Warehouse, local_store: LocalFolderStore, database_url: str
) -> None:
    world = World(warehouse, local_store)
    orders = world.start(_orders(11, DAYS, 25, "b"))
    cursor = world.sensor_cursor()

    # The same customers delivered again: nothing changed, nothing is touched.
    report = world.deliver_customers("customers-again.csv", dict(CUSTOMERS))
    assert report.reference_changes == ()
    assert last_touched_id(warehouse) == SensorCursor.parse(cursor).after(world.orders.name)

    # C01 moves from wholesale to vip; C99 (unknown so far) appears as retail.
    moved = {**CUSTOMERS, "C01": "vip", "C99": "retail"}
    report = world.deliver_customers("customers-2.csv", moved)
    [message] = report.reference_changes
    assert f"reference {world.customers.name} changed for 2 keys:" in message
    assert f"of {world.orders.name} recorded (lookup customer)" in message

    # The sensor requests exactly the local days holding orders of C01 or C99.
    result, days = _sensor_requests(world, database_url, cursor)
    affected = _local_days(orders, "C01") | _local_days(orders, "C99")
    assert affected and days == affected
    with warehouse.connect() as conn:
        sources = (
            conn.execute(
                sa.select(touched_periods.c.source)
                .where(touched_periods.c.id > SensorCursor.parse(cursor).after(world.orders.name))
                .distinct()
            )
            .scalars()
            .all()
        )
    assert sources == [world.orders.name]

    # Refreshing those days (and their month, by the engine) gives the current-version values.
    for day in sorted(days):
        for kpi in world.kpis:
            plan = plan_kpi(world.catalog, kpi.name)
            refresh_kpi(warehouse, plan, dt.date.fromisoformat(day), dt.date.fromisoformat(day))
    world.check(orders, moved)

    # Late data: orders for the first day arrive after the change, one for C01.
    late = _orders(12, [DAYS[0]], 6, "late")
    late[0]["customer_id"] = "C01"
    world.deliver_orders("orders-late.csv", late)
    result, days = _sensor_requests(world, database_url, result.cursor or "")
    assert days == {DAYS[0].isoformat()}
    world.refresh()
    world.check(orders + late, moved)

    # A correction of customers-2.csv without C01 and C99: C01 is wholesale again (the older
    # files still hold it, and the newest version holding a key wins, as for any row); C99 is
    # gone, its orders lose their segment (NULL).
    corrected = {k: v for k, v in moved.items() if k not in ("C01", "C99")}
    report = world.deliver_customers("customers-2.csv", corrected)
    assert len(report.reference_changes) == 1
    result, days = _sensor_requests(world, database_url, result.cursor or "")
    assert days == _local_days(orders + late, "C01") | _local_days(orders + late, "C99")
    world.refresh()
    world.check(orders + late, {**corrected, "C01": CUSTOMERS["C01"]})


def test_demo_customers_match_the_orders_and_move_segment_when_re_sent(
    local_store: LocalFolderStore,
) -> None:
    catalog = load_catalog(DEMO_CATALOG_DIR)
    assert plan_kpi(catalog, "net_revenue_by_segment").references == {
        "customer": catalog.sources["customers"]
    }
    specs = [catalog.sources["orders"], catalog.sources["customers"]]
    generate_demo(local_store, specs, rows=3000, days=3, seed=5)

    def read(prefix: str) -> pl.DataFrame:
        keys = sorted(info.key for info in local_store.list(prefix))
        return pl.concat(
            pl.read_csv(local_store.root / key, infer_schema=False).with_columns(file=pl.lit(i))
            for i, key in enumerate(keys)
        )

    customers = read("landing/customers/")
    orders = read("landing/orders/")
    known = set(customers.get_column("customer_id").to_list())
    ordering = orders.get_column("customer_id").drop_nulls()
    matched = ordering.is_in(list(known)).sum()
    # Small customer numbers order most, and the master lists them first: many orders match.
    assert 0.2 * ordering.len() < matched < ordering.len()
    # A customer re-sent in a later file has grown into the next segment.
    versions = customers.filter(
        pl.col("segment").is_in(["consumer", "small_business", "enterprise"])
    )
    moved = (
        versions.group_by("customer_id")
        .agg(pl.col("segment").sort_by("file").alias("segments"))
        .filter(pl.col("segments").list.n_unique() > 1)
    )
    assert moved.height > 0
    for first, *later in moved.get_column("segments").to_list():
        assert later[-1] == {"consumer": "small_business", "small_business": "enterprise"}[first]


def test_the_clean_run_of_a_changed_reference_says_what_it_touched(
    warehouse: Warehouse, local_store: LocalFolderStore, database_url: str
) -> None:
    world = World(warehouse, local_store)
    world.start(_orders(13, DAYS, 10, "c"))
    local_store.write(
        f"{world.customers.landing_prefix}customers-2.csv",
        _customers_csv({**CUSTOMERS, "C03": "wholesale"}),
    )
    load_pending(world.customers, local_store, warehouse)

    result = dg.materialize(
        [build_clean_asset(world.customers, world.lookups)],
        resources={"warehouse": WarehouseResource(database_url=database_url)},
    )

    [event] = result.get_asset_materialization_events()
    materialization = event.step_materialization_data.materialization
    text = materialization.metadata["reference_changes"].value
    assert isinstance(text, str)
    assert f"reference {world.customers.name} changed for 1 key:" in text
    assert f"slots of {world.orders.name} recorded" in text


def test_a_reference_failing_its_quarantine_check_holds_the_kpis_that_look_it_up(
    warehouse: Warehouse, local_store: LocalFolderStore, database_url: str
) -> None:
    world = World(warehouse, local_store)
    orders = world.start(_orders(17, DAYS, 12, "d"))
    cursor = world.sensor_cursor()

    # C04 moves segment, but most rows of the file lack their customer number.
    bad = _customers_csv({"C04": "vip"}) + b"".join(b",retail\n" for _ in range(9))
    local_store.write(f"{world.customers.landing_prefix}customers-bad.csv", bad)
    load_pending(world.customers, local_store, warehouse)
    clean_pending(warehouse, world.customers, world.lookups)

    held = _sensor_tick(world, database_url, cursor)
    assert isinstance(held, dg.SensorResult) and not held.run_requests
    assert f"blocked by check quarantine_rate on clean/{world.customers.name}" in (
        held.skip_reason.skip_message if held.skip_reason else ""
    )
    assert SensorCursor.parse(held.cursor).after(world.orders.name) == SensorCursor.parse(
        cursor
    ).after(world.orders.name)

    # A good delivery passes the check: the held periods of C04's orders are refreshed.
    assert CUSTOMERS["C06"] == "retail"
    world.deliver_customers("customers-good.csv", {"C06": "wholesale"})
    _, days = _sensor_requests(world, database_url, held.cursor or "")
    assert days == _local_days(orders, "C04") | _local_days(orders, "C06")


def test_a_quarantine_replay_of_the_reference_from_the_cli_touches_the_released_keys(
    warehouse: Warehouse,
    local_store: LocalFolderStore,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World(warehouse, local_store, segments=["retail", "wholesale", "vip"])
    orders = world.start(_orders(19, DAYS, 12, "e"))
    cursor = world.sensor_cursor()
    # C07 becomes a key account, a segment the catalog does not allow yet: quarantined.
    report = world.deliver_customers("customers-2.csv", {"C07": "key_account"})
    assert report.quarantined_rows == 1 and report.reference_changes == ()

    allowed = ColumnSpec(
        name="segment", type="string", allowed_values=["retail", "wholesale", "vip", "key_account"]
    )
    fixed = world.customers.model_copy(update={"columns": [world.customers.columns[0], allowed]})
    folder = write_catalog(tmp_path / "catalog", [fixed, world.orders], [])
    monkeypatch.setenv("CATALOG_DIR", str(folder))
    monkeypatch.setenv("STORAGE_URL", f"file://{local_store.root}")
    assert main(["quarantine", "replay", world.customers.name]) == 0

    _, days = _sensor_requests(world, database_url, cursor)
    assert days == _local_days(orders, "C07")
    world.refresh()
    world.check(orders, {**CUSTOMERS, "C07": "key_account"})
