"""The landing sensor: bounded listings per tick, a wrapping cursor, run keys, corrections found."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import IO

import dagster as dg
import pytest
import sqlalchemy as sa

from analytics_pipelines.defs.ingest.sensors import build_landing_sensor, raw_op_name
from analytics_pipelines.defs.run_priority import INGEST, PRIORITY_TAG
from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.ingest.discovery import LandingCursor, TickPlan, plan_tick
from analytics_pipelines.lib.storage import LocalFolderStore, ObjectInfo, ObjectStore, S3Store
from analytics_pipelines.lib.tables import ledger
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import ObjectStoreResource, WarehouseResource
from analytics_pipelines_tests.test_ingest_helpers import key_of, make_source

PAGE = 1000
OBJECTS = 10_000


class CountingStore(ObjectStore):
    """The real store, counting how many objects each listing returned."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.listed: list[int] = []

    def describe(self) -> str:
        return self.inner.describe()

    def check(self) -> None:
        self.inner.check()

    def list(
        self, prefix: str = "", *, start_after: str | None = None, limit: int = 1000
    ) -> list[ObjectInfo]:
        page = self.inner.list(prefix, start_after=start_after, limit=limit)
        self.listed.append(len(page))
        return page

    def head(self, key: str) -> ObjectInfo:
        return self.inner.head(key)

    def open(self, key: str) -> AbstractContextManager[IO[bytes]]:
        return self.inner.open(key)

    def write(self, key: str, data: bytes | IO[bytes]) -> ObjectInfo:
        return self.inner.write(key, data)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def _fill(store: ObjectStore, source: SourceSpec, count: int) -> None:
    def put(i: int) -> None:
        key, body = key_of(source, f"f{i:06d}.csv"), b"order_id,ordered_at\nX%d,2024-03-01\n" % i
        if isinstance(store, S3Store):
            # Straight PUT (the store's write also HEADs): moto is slow enough already.
            store.client.put_object(Bucket=store.bucket, Key=f"{store.prefix}{key}", Body=body)
        else:
            store.write(key, body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))


def _pretend_loaded(warehouse: Warehouse, source: SourceSpec, plan: TickPlan) -> None:
    """Record the tick's objects in the ledger as a finished run would (without loading 10k files)."""
    with warehouse.begin() as conn:
        conn.execute(
            sa.insert(ledger),
            [
                {
                    "source": source.name,
                    "object_key": i.key,
                    "etag": i.etag,
                    "size_bytes": i.size,
                    "status": "loaded",
                }
                for i in plan.new
            ],
        )


def _tick(
    counting: CountingStore, source: SourceSpec, warehouse: Warehouse, cursor: LandingCursor
) -> tuple[TickPlan, int]:
    before = len(counting.listed)
    plan = plan_tick(source, counting, warehouse, cursor, PAGE)
    return plan, sum(counting.listed[before:])


@pytest.mark.timeout(900)
def test_ten_thousand_objects_bounded_listing_per_tick(
    store: ObjectStore, warehouse: Warehouse
) -> None:
    source = make_source()
    _fill(store, source, OBJECTS)
    counting = CountingStore(store)
    cursor = LandingCursor()
    run_keys: set[str] = set()
    emitted: list[str] = []

    # First pass: one page per tick, every object requested exactly once.
    for _ in range(OBJECTS // PAGE):
        plan, listed = _tick(counting, source, warehouse, cursor)
        assert listed <= PAGE
        assert len(plan.new) == PAGE
        run_keys.add(plan.run_key)
        emitted += [i.key for i in plan.new]
        _pretend_loaded(warehouse, source, plan)
        cursor = plan.cursor
    assert len(run_keys) == OBJECTS // PAGE
    assert sorted(emitted) == [key_of(source, f"f{i:06d}.csv") for i in range(OBJECTS)]
    # The short page ends the pass: the sweep wraps around and the tail starts at the last key.
    plan, listed = _tick(counting, source, warehouse, cursor)
    assert (plan.new, listed) == ([], 0)
    cursor = plan.cursor
    assert (cursor.after, cursor.high, cursor.passes) == (None, key_of(source, "f009999.csv"), 1)

    # A new object (sorting last) is found on the very next tick, by the tail listing.
    store.write(key_of(source, "f010000.csv"), b"order_id,ordered_at\nNEW,2024-03-02\n")
    plan, listed = _tick(counting, source, warehouse, cursor)
    assert [i.key for i in plan.new] == [key_of(source, "f010000.csv")]
    assert listed <= 2 * PAGE
    _pretend_loaded(warehouse, source, plan)
    cursor = plan.cursor

    # A correction early in key order is found when the sweep comes round, bounded every tick.
    corrected = store.write(
        key_of(source, "f000005.csv"), b"order_id,ordered_at\nFIXED,2024-03-03\n"
    )
    found: list[ObjectInfo] = []
    ticks = 0
    while not found:
        ticks += 1
        assert ticks <= OBJECTS // PAGE + 2
        plan, listed = _tick(counting, source, warehouse, cursor)
        assert listed <= 2 * PAGE
        found = plan.new
        cursor = plan.cursor
    assert [(i.key, i.etag) for i in found] == [(corrected.key, corrected.etag)]
    assert max(counting.listed) <= PAGE


def test_same_batch_gives_the_same_run_key(
    local_store: LocalFolderStore, warehouse: Warehouse
) -> None:
    source = make_source()
    _fill(local_store, source, 3)
    first = plan_tick(source, local_store, warehouse, LandingCursor(), PAGE)
    again = plan_tick(source, local_store, warehouse, LandingCursor(), PAGE)
    assert first.run_key == again.run_key
    local_store.write(key_of(source, "f000001.csv"), b"order_id,ordered_at\nCHANGED,2024-03-01\n")
    changed = plan_tick(source, local_store, warehouse, LandingCursor(), PAGE)
    assert changed.run_key != first.run_key


def _store_resource(store: ObjectStore) -> ObjectStoreResource:
    if isinstance(store, S3Store):
        return ObjectStoreResource(
            storage_url=f"s3://{store.bucket}/{store.prefix}",
            s3_endpoint_url=store.endpoint_url,
            s3_access_key_id="testing",
            s3_secret_access_key="testing",
        )
    assert isinstance(store, LocalFolderStore)
    return ObjectStoreResource(storage_url=f"file://{store.root}")


def test_dagster_sensor_requests_runs_with_keys_and_cursor(
    store: ObjectStore, warehouse: Warehouse, database_url: str
) -> None:
    source = make_source()
    _fill(store, source, 25)
    sensor = build_landing_sensor(source, page_size=10)
    resources = {
        "warehouse": WarehouseResource(database_url=database_url),
        "object_store": _store_resource(store),
    }
    instance = dg.DagsterInstance.ephemeral()

    cursor: str | None = None
    requested: list[str] = []
    for expected in (10, 10, 5):
        context = dg.build_sensor_context(cursor=cursor, resources=resources, instance=instance)
        result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        [request] = result.run_requests or []
        keys = request.run_config["ops"][raw_op_name(source.name)]["config"]["keys"]
        assert len(keys) == expected
        assert request.run_key and request.run_key.startswith(f"{source.name}:")
        assert request.tags["ingest/source"] == source.name
        # A delivery's load starts before any other waiting run.
        assert request.tags[PRIORITY_TAG] == INGEST[PRIORITY_TAG]
        requested += keys
        cursor = result.cursor
    assert requested == [key_of(source, f"f{i:06d}.csv") for i in range(25)]
    assert LandingCursor.parse(cursor).passes == 1
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 30

    # Once loaded, the next ticks request nothing and say why.
    load_pending(source, store, warehouse)
    context = dg.build_sensor_context(cursor=cursor, resources=resources, instance=instance)
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    assert not result.run_requests
    assert result.skip_reason is not None and "nothing new" in (
        result.skip_reason.skip_message or ""
    )


def test_unreadable_cursor_restarts_the_sweep() -> None:
    assert LandingCursor.parse("not json") == LandingCursor()
    assert LandingCursor.parse(
        LandingCursor(after="a", high="b", passes=3).dump()
    ) == LandingCursor(after="a", high="b", passes=3)
