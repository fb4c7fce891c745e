"""The Parquet lake: cleaned rows per business date, incremental re-archives, raw retention behind it."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from analytics_pipelines.defs.archive.assets import archive_asset_key, build_archive_asset
from analytics_pipelines.lib.archive import (
    ArchiveError,
    archive_dates,
    archive_source,
    date_key,
    purge_raw,
)
from analytics_pipelines.lib.catalog import SourceSpec
from analytics_pipelines.lib.ingest.raw_tables import attach_file_table, open_file_table
from analytics_pipelines.lib.storage import LocalFolderStore, ObjectStore
from analytics_pipelines.lib.tables import clean_table, ledger, raw_table, touched_periods
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import ObjectStoreResource, WarehouseResource

UTC = dt.UTC
NOW = dt.datetime.now(UTC)
HOUR_AGO = NOW - dt.timedelta(hours=1)
# Berlin is UTC+2 in May: 22:30 UTC on the 1st is already the 2nd there.
D1, D2 = dt.date(2024, 5, 1), dt.date(2024, 5, 2)


def make_source(retention: int | None = 30) -> SourceSpec:
    return SourceSpec.model_validate(
        {
            "name": f"arch_{uuid.uuid4().hex[:10]}",
            "value_chain": "sales",
            "landing_prefix": "landing/x",
            "format": "csv",
            "columns": [
                {"name": "order_id", "type": "string", "required": True},
                {"name": "ordered_at", "type": "timestamp", "required": True},
                {"name": "amount", "type": "decimal"},
                {"name": "quantity", "type": "integer"},
                {"name": "gift", "type": "boolean"},
                {"name": "note", "type": "string"},
            ],
            "primary_key": ["order_id"],
            "event_time": "ordered_at",
            "timezone": "Europe/Berlin",
            "raw_retention_days": retention,
        }
    )


class Fixture:
    """A source's raw and clean tables and ledger rows, written the way ingestion and clean do."""

    def __init__(self, warehouse: Warehouse, source: SourceSpec) -> None:
        self.warehouse = warehouse
        self.source = source
        self.raw = raw_table(source)
        self.clean = clean_table(source)
        with warehouse.begin() as conn:
            self.raw.create(conn)
            self.clean.create(conn)

    def file(self, *, loaded_days_ago: int, cleaned: bool = True) -> int:
        loaded = NOW - dt.timedelta(days=loaded_days_ago)
        with self.warehouse.begin() as conn:
            return int(
                conn.execute(
                    sa.insert(ledger)
                    .values(
                        source=self.source.name,
                        object_key=f"landing/x/{uuid.uuid4().hex}.csv",
                        etag=uuid.uuid4().hex,
                        size_bytes=1,
                        status="loaded",
                        loaded_at=loaded,
                        cleaned_at=loaded if cleaned else None,
                    )
                    .returning(ledger.c.file_id)
                ).scalar_one()
            )

    def rows(
        self,
        file_id: int,
        rows: list[dict[str, Any]],
        *,
        loaded_days_ago: int,
        cleaned_at: dt.datetime | None = HOUR_AGO,
    ) -> None:
        loaded = NOW - dt.timedelta(days=loaded_days_ago)
        with self.warehouse.begin() as conn:
            open_file_table(conn, self.source.name, file_id, [])
            attach_file_table(conn, self.source.name, file_id)
            for line, row in enumerate(rows, start=1):
                text = {k: None if v is None else str(v) for k, v in row.items()}
                conn.execute(
                    sa.insert(self.raw).values(
                        **text, _file_id=file_id, _line=line, _loaded_at=loaded
                    )
                )
                if cleaned_at is not None:
                    conn.execute(
                        sa.insert(self.clean).values(
                            **row, _file_id=file_id, _line=line, _cleaned_at=cleaned_at
                        )
                    )

    def raw_count(self, file_id: int) -> int:
        with self.warehouse.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(self.raw.c._file_id == file_id)
                ).scalar_one()
            )

    def drop(self) -> None:
        name = self.source.name
        with self.warehouse.begin() as conn:
            self.raw.drop(conn, checkfirst=True)
            self.clean.drop(conn, checkfirst=True)
            conn.execute(sa.delete(archive_dates).where(archive_dates.c.source == name))
            conn.execute(
                sa.text("DELETE FROM ingest.archive_watermarks WHERE source = :s"), {"s": name}
            )
            conn.execute(sa.delete(touched_periods).where(touched_periods.c.source == name))
            conn.execute(sa.delete(ledger).where(ledger.c.source == name))


@pytest.fixture
def orders(warehouse: Warehouse) -> Iterator[Fixture]:
    fixture = Fixture(warehouse, make_source())
    yield fixture
    fixture.drop()


def order(
    order_id: str, at: str, amount: str | None = "10.50", note: str | None = ""
) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "ordered_at": dt.datetime.fromisoformat(at),
        "amount": None if amount is None else Decimal(amount),
        "quantity": 2,
        "gift": order_id.endswith("1"),
        "note": note,
    }


def read_date(store: ObjectStore, source: str, day: dt.date) -> pl.DataFrame:
    with store.open(date_key(source, day)) as handle:
        return pl.read_parquet(io.BytesIO(handle.read()))


def test_archive_writes_one_parquet_file_per_business_date(
    orders: Fixture, store: ObjectStore, warehouse: Warehouse
) -> None:
    file_id = orders.file(loaded_days_ago=1)
    orders.rows(
        file_id,
        [
            order("A-1", "2024-05-01T08:00:00+00:00", "10.50", note=None),
            order(
                "A-2", "2024-05-01T22:30:00+00:00", "0.123456789", note="with, comma\nand newline"
            ),
            order("A-3", "2024-05-02T09:15:00+00:00", None, note=""),
        ],
        loaded_days_ago=1,
    )

    result = archive_source(warehouse, store, orders.source, run_id="run-1")

    assert result.dates_archived == [D1, D2]
    assert (result.rows, result.files) == (3, 2)
    first = read_date(store, orders.source.name, D1)
    assert first["order_id"].to_list() == ["A-1"]
    second = read_date(store, orders.source.name, D2)
    assert second["order_id"].to_list() == ["A-2", "A-3"]
    assert second["amount"].to_list() == [Decimal("0.123456789"), None]
    # NULL and the empty string stay different, text with separators survives.
    assert first["note"].to_list() == [None]
    assert second["note"].to_list() == ["with, comma\nand newline", ""]
    assert second["ordered_at"].to_list()[0] == dt.datetime(2024, 5, 1, 22, 30, tzinfo=UTC)
    assert first["gift"].to_list() == [True]
    assert second["_file_id"].to_list() == [file_id, file_id]

    with warehouse.connect() as conn:
        recorded = conn.execute(
            sa.select(archive_dates.c.business_date, archive_dates.c.rows, archive_dates.c.run_id)
            .where(archive_dates.c.source == orders.source.name)
            .order_by(archive_dates.c.business_date)
        ).all()
    assert [tuple(r) for r in recorded] == [(D1, 1, "run-1"), (D2, 2, "run-1")]


def test_the_lake_is_a_hive_dataset_for_polars(
    orders: Fixture, local_store: LocalFolderStore, warehouse: Warehouse
) -> None:
    file_id = orders.file(loaded_days_ago=1)
    orders.rows(
        file_id,
        [
            order("B-1", "2024-05-01T08:00:00+00:00"),
            order("B-2", "2024-05-02T08:00:00+00:00"),
            order("B-3", "2024-05-02T09:00:00+00:00"),
        ],
        loaded_days_ago=1,
    )
    archive_source(warehouse, local_store, orders.source)

    lake = pl.scan_parquet(
        f"{local_store.root}/lake/{orders.source.name}/**/*.parquet", hive_partitioning=True
    )
    per_date = (
        lake.group_by("date")
        .agg(pl.len().alias("rows"), pl.col("amount").sum())
        .sort("date")
        .collect()
    )
    assert per_date["date"].to_list() == [D1, D2]
    assert per_date["rows"].to_list() == [1, 2]
    assert per_date["amount"].to_list() == [Decimal("10.5"), Decimal("21")]


def test_a_rearchive_touches_only_new_dates_and_replaces_their_files(
    orders: Fixture, store: ObjectStore, warehouse: Warehouse
) -> None:
    file_id = orders.file(loaded_days_ago=1)
    orders.rows(
        file_id,
        [order("C-1", "2024-05-01T08:00:00+00:00"), order("C-2", "2024-05-02T08:00:00+00:00")],
        loaded_days_ago=1,
    )
    archive_source(warehouse, store, orders.source)
    assert archive_source(warehouse, store, orders.source).dates_archived == []

    # A leftover of an earlier layout in the folder of D1: a re-archive leaves one file only.
    stale = f"lake/{orders.source.name}/date={D1.isoformat()}/part-1.parquet"
    store.write(stale, b"old")
    late = orders.file(loaded_days_ago=0)
    orders.rows(
        late,
        [order("C-3", "2024-05-01T09:00:00+00:00")],
        loaded_days_ago=0,
        cleaned_at=dt.datetime.now(UTC),
    )

    again = archive_source(warehouse, store, orders.source)

    assert again.dates_archived == [D1]
    assert read_date(store, orders.source.name, D1)["order_id"].to_list() == ["C-1", "C-3"]
    keys = [info.key for info in store.iter_all(f"lake/{orders.source.name}/date={D1}/")]
    assert keys == [date_key(orders.source.name, D1)]
    assert read_date(store, orders.source.name, D2)["order_id"].to_list() == ["C-2"]


def test_a_date_that_lost_all_its_rows_loses_its_archive(
    orders: Fixture, store: ObjectStore, warehouse: Warehouse
) -> None:
    file_id = orders.file(loaded_days_ago=1)
    orders.rows(
        file_id,
        [order("D-1", "2024-05-01T08:00:00+00:00"), order("D-2", "2024-05-02T08:00:00+00:00")],
        loaded_days_ago=1,
    )
    archive_source(warehouse, store, orders.source)

    # A corrected file took D2's row away; the clean stage records the business time it touched.
    with warehouse.begin() as conn:
        conn.execute(sa.delete(orders.clean).where(orders.clean.c.order_id == "D-2"))
        conn.execute(
            sa.insert(touched_periods).values(
                source=orders.source.name,
                file_id=file_id,
                slot_start=dt.datetime(2024, 5, 2, 8, 0, tzinfo=UTC),
            )
        )
    result = archive_source(warehouse, store, orders.source)

    assert result.dates_emptied == [D2]
    assert list(store.iter_all(f"lake/{orders.source.name}/date={D2}/")) == []
    with warehouse.connect() as conn:
        days = (
            conn.execute(
                sa.select(archive_dates.c.business_date).where(
                    archive_dates.c.source == orders.source.name
                )
            )
            .scalars()
            .all()
        )
    assert days == [D1]


def test_raw_rows_past_retention_are_deleted_only_once_archived(
    orders: Fixture, local_store: LocalFolderStore, warehouse: Warehouse
) -> None:
    old_archived = orders.file(loaded_days_ago=40)
    orders.rows(old_archived, [order("E-1", "2024-05-01T08:00:00+00:00")], loaded_days_ago=40)
    recent = orders.file(loaded_days_ago=5)
    orders.rows(recent, [order("E-2", "2024-05-01T09:00:00+00:00")], loaded_days_ago=5)
    archive_source(warehouse, local_store, orders.source)

    # Cleaned after the archive's watermark: its date is archived, but not with this row in it.
    old_not_archived = orders.file(loaded_days_ago=40)
    orders.rows(
        old_not_archived,
        [order("E-3", "2024-05-01T10:00:00+00:00")],
        loaded_days_ago=40,
        cleaned_at=dt.datetime.now(UTC) + dt.timedelta(minutes=5),
    )
    # Never reached clean (e.g. still being cleaned): raw is all there is.
    old_uncleaned = orders.file(loaded_days_ago=40, cleaned=False)
    orders.rows(
        old_uncleaned,
        [order("E-4", "2024-05-01T11:00:00+00:00")],
        loaded_days_ago=40,
        cleaned_at=None,
    )

    deleted = purge_raw(warehouse, orders.source)

    assert deleted == 1
    assert orders.raw_count(old_archived) == 0
    assert orders.raw_count(recent) == 1
    assert orders.raw_count(old_not_archived) == 1
    assert orders.raw_count(old_uncleaned) == 1
    with warehouse.connect() as conn:
        kept = conn.execute(
            sa.select(sa.func.count()).where(ledger.c.file_id == old_archived)
        ).scalar_one()
    assert kept == 1  # the ledger keeps its record


def test_no_retention_declared_deletes_nothing(
    warehouse: Warehouse, local_store: LocalFolderStore
) -> None:
    fixture = Fixture(warehouse, make_source(retention=None))
    try:
        file_id = fixture.file(loaded_days_ago=400)
        fixture.rows(file_id, [order("F-1", "2024-05-01T08:00:00+00:00")], loaded_days_ago=400)
        archive_source(warehouse, local_store, fixture.source)
        assert purge_raw(warehouse, fixture.source) == 0
        assert fixture.raw_count(file_id) == 1
    finally:
        fixture.drop()


def test_a_value_the_archive_cannot_hold_fails_naming_source_and_date(
    orders: Fixture, local_store: LocalFolderStore, warehouse: Warehouse
) -> None:
    file_id = orders.file(loaded_days_ago=1)
    orders.rows(
        file_id, [order("G-1", "2024-05-01T08:00:00+00:00", "1.0000000001")], loaded_days_ago=1
    )
    with pytest.raises(
        ArchiveError, match=rf"archive of {orders.source.name} for 2024-05-01: column .amount."
    ):
        archive_source(warehouse, local_store, orders.source)
    # Nothing recorded: the next run tries the date again.
    with warehouse.connect() as conn:
        assert (
            conn.execute(
                sa.select(sa.func.count()).where(archive_dates.c.source == orders.source.name)
            ).scalar_one()
            == 0
        )


def test_the_archive_asset_reports_what_it_did(
    orders: Fixture, local_store: LocalFolderStore, warehouse: Warehouse, database_url: str
) -> None:
    file_id = orders.file(loaded_days_ago=40)
    orders.rows(
        file_id,
        [order("H-1", "2024-05-01T08:00:00+00:00"), order("H-2", "2024-05-02T08:00:00+00:00")],
        loaded_days_ago=40,
    )
    asset = build_archive_asset(orders.source)
    key = archive_asset_key(orders.source.name)
    spec = asset.specs_by_key[key]
    assert spec.group_name == "sales"
    assert set(spec.kinds) == {"parquet", "s3"}
    assert [dep.asset_key for dep in spec.deps] == [dg.AssetKey(["clean", orders.source.name])]

    result = dg.materialize(
        [asset],
        resources={
            "warehouse": WarehouseResource(database_url=database_url),
            "object_store": ObjectStoreResource(storage_url=f"file://{local_store.root}"),
        },
    )

    assert result.success
    metadata = result.asset_materializations_for_node(asset.op.name)[0].metadata
    assert metadata["dates_archived"].value == ["2024-05-01", "2024-05-02"]
    assert metadata["rows"].value == 2
    assert metadata["files"].value == 2
    assert metadata["raw_rows_deleted"].value == 2
    assert orders.raw_count(file_id) == 0


def test_the_code_location_has_one_archive_asset_per_catalog_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from analytics_pipelines.defs.archive.assets import archive_definitions
    from analytics_pipelines.defs.resources import resources

    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:1/x")
    monkeypatch.setenv("STORAGE_URL", f"file://{tmp_path}")
    monkeypatch.delenv("CATALOG_DIR", raising=False)
    defs = dg.Definitions.merge(archive_definitions(), resources())
    groups = {
        spec.key.to_user_string(): spec.group_name
        for spec in defs.resolve_all_asset_specs()
        if spec.key.path[0] == "archive"  # the clean/<source> keys it depends on show up too
    }
    assert groups == {
        "archive/archive_orders": "sales",
        "archive/archive_inventory_movements": "supply_chain",
        "archive/archive_support_tickets": "customer_service",
    }
    assert defs.resolve_schedule_def("archive_schedule").default_status == (
        dg.DefaultScheduleStatus.RUNNING
    )
