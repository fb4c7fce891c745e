"""Exactly-once: duplicates are not loaded twice, corrections replace rows, extras are kept."""

from __future__ import annotations

import threading

from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.storage import ObjectStore
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_ingest_helpers import (
    key_of,
    ledger_rows,
    make_source,
    raw_count,
    raw_rows,
    values,
)

V1 = b"order_id,ordered_at,region,amount\nA,2024-03-01,north,1\nB,2024-03-02,south,2\n"
V2 = b"order_id,ordered_at,region,amount\nA,2024-03-05,north,10\n"


def test_same_content_under_another_key_is_a_duplicate(
    store: ObjectStore, warehouse: Warehouse
) -> None:
    source = make_source()
    store.write(key_of(source, "day1.csv"), V1)
    [first] = load_pending(source, store, warehouse).outcomes

    store.write(key_of(source, "day1_copy.csv"), V1)
    [again] = load_pending(source, store, warehouse).outcomes

    assert (again.status, again.duplicate_of, again.rows) == ("duplicate", first.file_id, 0)
    assert raw_count(warehouse, source) == 2
    entries = ledger_rows(warehouse, source)
    assert values(entries, "object_key", "status", "duplicate_of") == [
        (key_of(source, "day1.csv"), "loaded", None),
        (key_of(source, "day1_copy.csv"), "duplicate", first.file_id),
    ]
    # Nothing is pending any more: a further run is a no-op.
    assert load_pending(source, store, warehouse).outcomes == []


def test_duplicate_found_by_content_hash_when_etag_is_not_md5(
    local_store: ObjectStore, warehouse: Warehouse
) -> None:
    """Multipart uploads have etags like `…-3`; the hash taken while reading still catches them."""
    from dataclasses import replace

    from analytics_pipelines.lib.ingest import load_object

    source = make_source()
    load_pending(source, local_store, warehouse)  # creates the table
    info = local_store.write(key_of(source, "a.csv"), V1)
    first = load_object(source, local_store, warehouse, info)
    copy = local_store.write(key_of(source, "b.csv"), V1)

    again = load_object(source, local_store, warehouse, replace(copy, etag="0123abcd-2"))

    assert (again.status, again.duplicate_of) == ("duplicate", first.file_id)
    assert raw_count(warehouse, source) == 2


def test_corrected_file_replaces_rows_of_previous_version(
    store: ObjectStore, warehouse: Warehouse
) -> None:
    source = make_source()
    key = key_of(source, "orders.csv")
    store.write(key, V1)
    [old] = load_pending(source, store, warehouse).outcomes

    store.write(key, V2)
    [new] = load_pending(source, store, warehouse).outcomes

    assert (new.status, new.superseded) == ("loaded", [old.file_id])
    assert values(raw_rows(warehouse, source), "order_id", "amount", "_file_id") == [
        ("A", "10", new.file_id)
    ]
    entries = ledger_rows(warehouse, source)
    assert values(entries, "file_id", "status", "superseded_by", "row_count") == [
        (old.file_id, "superseded", new.file_id, 2),
        (new.file_id, "loaded", None, 1),
    ]
    assert str(entries[1]["business_date_min"]) == "2024-03-05"


def test_superseding_keeps_rows_another_key_still_delivers(
    store: ObjectStore, warehouse: Warehouse
) -> None:
    source = make_source()
    store.write(key_of(source, "a.csv"), V1)
    [original] = load_pending(source, store, warehouse).outcomes
    store.write(key_of(source, "b.csv"), V1)
    [duplicate] = load_pending(source, store, warehouse).outcomes

    store.write(key_of(source, "a.csv"), V2)
    [correction] = load_pending(source, store, warehouse).outcomes

    # b.csv still holds V1: its rows stay, now attributed to b.csv.
    assert sorted(values(raw_rows(warehouse, source), "order_id", "amount", "_file_id")) == [
        ("A", "1", duplicate.file_id),
        ("A", "10", correction.file_id),
        ("B", "2", duplicate.file_id),
    ]
    statuses = {e["file_id"]: e["status"] for e in ledger_rows(warehouse, source)}
    assert statuses == {
        original.file_id: "superseded",
        duplicate.file_id: "loaded",
        correction.file_id: "loaded",
    }


def test_extra_column_is_kept_and_reported(store: ObjectStore, warehouse: Warehouse) -> None:
    source = make_source()
    store.write(
        key_of(source, "x.csv"),
        b"order_id,Gift Note,ordered_at,region,amount\nA,for mum,2024-03-01,north,1\n",
    )
    store.write(key_of(source, "y.csv"), b"order_id,ordered_at\nB,2024-03-01\n")

    report = load_pending(source, store, warehouse)

    assert report.extra_columns == ["gift_note"]
    assert [o.extra_columns for o in report.outcomes] == [["gift_note"], []]
    assert values(raw_rows(warehouse, source), "order_id", "gift_note", "region") == [
        ("A", "for mum", "north"),
        ("B", None, None),
    ]
    assert [e["extra_columns"] for e in ledger_rows(warehouse, source)] == [["gift_note"], None]


def test_two_concurrent_runs_load_each_file_once(store: ObjectStore, warehouse: Warehouse) -> None:
    source = make_source()
    for day in range(1, 9):
        body = V1.replace(b"2024-03-01", b"2024-03-%02d" % day).replace(b"A,", b"A%d," % day)
        store.write(key_of(source, f"day{day}.csv"), body)
    reports = []
    barrier = threading.Barrier(2)

    def run(run_id: str) -> None:
        barrier.wait()
        reports.append(load_pending(source, store, warehouse, run_id=run_id))

    threads = [threading.Thread(target=run, args=(f"run-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(reports) == 2
    assert sum(len(r.loaded_file_ids) for r in reports) == 8
    assert raw_count(warehouse, source) == 16
    entries = ledger_rows(warehouse, source)
    assert len(entries) == 8
    assert {e["status"] for e in entries} == {"loaded"}
    # Lines of different files never interleave: each file's lines are 2, 3.
    rows = raw_rows(warehouse, source)
    assert {(r["_file_id"], r["_line"]) for r in rows} == {
        (e["file_id"], line) for e in entries for line in (2, 3)
    }
