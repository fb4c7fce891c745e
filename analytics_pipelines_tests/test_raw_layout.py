"""`raw.<source>` holds one partition per file version; a table of the earlier layout converts."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.ingest.loader import FileOutcome
from analytics_pipelines.lib.storage import ObjectStore
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_ingest_helpers import (
    key_of,
    ledger_rows,
    make_source,
    raw_rows,
    values,
)

V1 = b"order_id,ordered_at,region,amount\nA,2024-03-01,north,1\nB,2024-03-02,south,2\n"
V2 = b"order_id,ordered_at,region,amount\nA,2024-03-05,north,10\n"


def partitions(warehouse: Warehouse, source: str) -> dict[str, int]:
    """Partition name -> its rows, from the catalog and each partition itself."""
    with warehouse.connect() as conn:
        names = conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = to_regclass(:parent) ORDER BY 1"
            ),
            {"parent": f'raw."{source}"'},
        ).scalars()
        return {
            name: conn.execute(
                sa.select(sa.func.count()).select_from(sa.table(name, schema="raw"))
            ).scalar_one()
            for name in names
        }


def indexes(warehouse: Warehouse, source: str) -> list[str]:
    with warehouse.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = 'raw' AND tablename = :t"
                ),
                {"t": source},
            ).scalars()
        )


def test_each_version_is_a_partition_and_a_duplicate_adds_none(
    store: ObjectStore, warehouse: Warehouse
) -> None:
    source = make_source()
    store.write(key_of(source, "a.csv"), V1)
    store.write(key_of(source, "b.csv"), V2)
    first, second = load_pending(source, store, warehouse).outcomes
    store.write(key_of(source, "copy_of_a.csv"), V1)
    [duplicate] = load_pending(source, store, warehouse).outcomes

    assert duplicate.status == "duplicate"
    assert partitions(warehouse, source.name) == {
        f"{source.name}#{first.file_id}": 2,
        f"{source.name}#{second.file_id}": 1,
    }
    # Nothing is maintained row by row while a file is copied in.
    assert indexes(warehouse, source.name) == []


def corrected(
    source: SourceSpec, store: ObjectStore, warehouse: Warehouse
) -> tuple[FileOutcome, FileOutcome]:
    """a.csv loaded, then a corrected version of it: both outcomes."""
    store.write(key_of(source, "a.csv"), V1)
    [first] = load_pending(source, store, warehouse).outcomes
    store.write(key_of(source, "a.csv"), V2)
    [correction] = load_pending(source, store, warehouse).outcomes
    return first, correction


def test_a_correction_deletes_the_rows_it_replaces_and_reads_the_same(
    store: ObjectStore, warehouse: Warehouse
) -> None:
    source = make_source()
    first, correction = corrected(source, store, warehouse)

    assert values(raw_rows(warehouse, source), "order_id", "amount", "_file_id") == [
        ("A", "10", correction.file_id)
    ]
    # The replaced version's rows are deleted row by row (readers never wait for the load)...
    assert partitions(warehouse, source.name) == {
        f"{source.name}#{first.file_id}": 0,
        f"{source.name}#{correction.file_id}": 1,
    }
    # ... and its emptied partition is dropped by the next load of the source.
    assert load_pending(source, store, warehouse).outcomes == []
    assert partitions(warehouse, source.name) == {f"{source.name}#{correction.file_id}": 1}


def test_an_emptied_partition_read_at_the_time_is_left_to_a_later_load(
    store: ObjectStore, warehouse: Warehouse
) -> None:
    source = make_source()
    first, correction = corrected(source, store, warehouse)
    store.write(key_of(source, "b.csv"), V1.replace(b"north", b"west"))

    with warehouse.connect() as reader:
        # A reader of raw.<source> (a clean step, an analyst) holds it while the next load runs.
        reader.execute(sa.text(f'SELECT count(*) FROM raw."{source.name}"'))
        started = time.monotonic()
        [later] = load_pending(source, store, warehouse).outcomes
        waited = time.monotonic() - started
        reader.rollback()

    assert later.status == "loaded"
    assert waited < 10
    assert f"{source.name}#{first.file_id}" in partitions(warehouse, source.name)
    load_pending(source, store, warehouse)
    assert partitions(warehouse, source.name) == {
        f"{source.name}#{correction.file_id}": 1,
        f"{source.name}#{later.file_id}": 2,
    }


def _single_table_layout(warehouse: Warehouse, name: str, rows: list[dict[str, Any]]) -> None:
    """`raw.<name>` as earlier versions created it: one table, BRIN on the file id."""
    with warehouse.begin() as conn:
        conn.execute(sa.text(f'CREATE SEQUENCE raw."{name}__line" CACHE 1000'))
        conn.execute(
            sa.text(
                f'CREATE TABLE raw."{name}" (order_id text, ordered_at text, region text,'
                " amount text, _file_id bigint NOT NULL DEFAULT raw._current_file_id(),"
                f" _line bigint NOT NULL DEFAULT nextval('raw.\"{name}__line\"'),"
                " _loaded_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        conn.execute(
            sa.text(f'CREATE INDEX "{name}__file_id" ON raw."{name}" USING brin (_file_id)')
        )
        conn.execute(
            sa.text(
                f'INSERT INTO raw."{name}" (order_id, ordered_at, region, amount, _file_id, _line)'
                " VALUES (:order_id, :ordered_at, :region, :amount, :file_id, :line)"
            ),
            rows,
        )


def test_a_raw_table_of_the_single_table_layout_is_converted_with_its_rows(
    store: ObjectStore, warehouse: Warehouse
) -> None:
    source = make_source()
    # The file-id function exists once a first load has run anywhere.
    load_pending(make_source(), store, warehouse)
    earlier = [
        {"order_id": "X", "ordered_at": "2024-01-01", "region": "west", "amount": "5",
         "file_id": 900001, "line": 2},
        {"order_id": "Y", "ordered_at": "2024-01-02", "region": None, "amount": "6",
         "file_id": 900001, "line": 3},
        {"order_id": "Z", "ordered_at": "2024-01-03", "region": "east", "amount": None,
         "file_id": 900002, "line": 2},
    ]  # fmt: skip
    _single_table_layout(warehouse, source.name, earlier)
    store.write(key_of(source, "new.csv"), V2)

    [new] = load_pending(source, store, warehouse).outcomes

    got = values(raw_rows(warehouse, source), "order_id", "region", "amount", "_file_id", "_line")
    expected = [
        (r["order_id"], r["region"], r["amount"], r["file_id"], r["line"]) for r in earlier
    ] + [("A", "north", "10", new.file_id, 2)]
    assert got == sorted(expected, key=lambda row: (row[3], row[4]))
    assert partitions(warehouse, source.name) == {
        f"{source.name}#900001": 2,
        f"{source.name}#900002": 1,
        f"{source.name}#{new.file_id}": 1,
    }
    assert indexes(warehouse, source.name) == []
    assert values(ledger_rows(warehouse, source), "status") == [("loaded",)]
