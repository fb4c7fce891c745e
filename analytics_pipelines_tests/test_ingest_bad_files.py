"""A file that cannot be read ends `failed` with a reason, leaves no rows, and blocks nothing."""

from __future__ import annotations

import gzip
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analytics_pipelines.lib.catalog.models import ReaderOptions
from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.storage import ObjectStore
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_ingest_helpers import (
    by_key,
    key_of,
    ledger_rows,
    make_source,
    raw_rows,
    values,
)

GOOD = b"order_id,ordered_at,region,amount\nG1,2024-03-01,north,1\nG2,2024-03-01,south,2\n"
HEADER = b"order_id,ordered_at,region,amount\n"


def _parquet_bytes() -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"order_id": ["x"]}), sink)
    return sink.getvalue()


def _truncated_gzip() -> bytes:
    data = gzip.compress(GOOD + b"".join(b"G%d,2024-03-01,north,1\n" % i for i in range(3, 5000)))
    return data[: len(data) // 2]


BAD_CSV = {
    "wrong_format": (_parquet_bytes(), "is a Parquet file"),
    "bad_encoding": (
        HEADER + b"E1,2024-03-01,M\xfcller,1\n",
        "line 2: bytes that are not valid utf-8",
    ),
    "ragged_long": (
        HEADER + b"R1,2024-03-01,north,1\nR2,2024-03-01,north,1,extra\n",
        "line 3: more fields",
    ),
    "ragged_short": (HEADER + b"R1,2024-03-01,north,1\nR2,2024-03-01\n", "line 3: fewer fields"),
    "missing_required": (
        b"order_id,region,amount\nM1,north,1\n",
        "missing required column(s) ordered_at",
    ),
    "empty": (b"", "the file is empty"),
    "truncated_gzip": (_truncated_gzip(), "gzip data is truncated"),
    "unterminated_quote": (HEADER + b'Q1,2024-03-01,"north,1\n', "never closed"),
    "duplicate_header": (b"order_id,ordered_at,region,region\nX,2024-03-01,a,b\n", "appears twice"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_bad_csv_fails_with_reason_and_no_rows(
    case: str, store: ObjectStore, warehouse: Warehouse
) -> None:
    source = make_source()
    data, reason = BAD_CSV[case]
    name = f"{case}.csv.gz" if case == "truncated_gzip" else f"{case}.csv"
    store.write(key_of(source, "a_good_first.csv"), GOOD)
    store.write(key_of(source, name), data)
    store.write(key_of(source, "z_good_last.csv"), GOOD.replace(b"G", b"H"))

    report = load_pending(source, store, warehouse)

    statuses = {o.key.rsplit("/", 1)[1]: o.status for o in report.outcomes}
    assert statuses == {"a_good_first.csv": "loaded", name: "failed", "z_good_last.csv": "loaded"}
    [failure] = report.failures
    assert reason in (failure.error or ""), failure.error
    [entry] = by_key(ledger_rows(warehouse, source), key_of(source, name))
    assert entry["status"] == "failed"
    assert entry["error"] == failure.error
    assert raw_rows(warehouse, source, entry["file_id"]) == []
    assert sorted(values(raw_rows(warehouse, source), "order_id")) == [
        ("G1",),
        ("G2",),
        ("H1",),
        ("H2",),
    ]


BAD_JSONL = {
    "not_json": (
        b'{"order_id": "A", "ordered_at": "2024-03-01"}\norder_id,ordered_at\n',
        "line 2: is not valid JSON",
    ),
    "not_object": (
        b'{"order_id": "A", "ordered_at": "2024-03-01"}\n\n[1, 2]\n',
        "line 3: is a JSON array, not an object",
    ),
    "missing_required": (b'{"order_id": "A"}\n', "missing required column(s) ordered_at"),
    "empty": (b"\n\n", "the file is empty"),
    "bad_encoding": (
        b'{"order_id": "A\xe9", "ordered_at": "2024-03-01"}\n',
        "line 1: bytes that are not valid utf-8",
    ),
    "wrong_format": (_parquet_bytes(), "is a Parquet file"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSONL))
def test_bad_jsonl_fails_with_reason_and_no_rows(
    case: str, store: ObjectStore, warehouse: Warehouse
) -> None:
    source = make_source("jsonl")
    data, reason = BAD_JSONL[case]
    store.write(key_of(source, f"{case}.jsonl"), data)
    store.write(key_of(source, "ok.jsonl"), b'{"order_id": "OK", "ordered_at": "2024-03-01"}\n')

    report = load_pending(source, store, warehouse)

    [failure] = report.failures
    assert reason in (failure.error or ""), failure.error
    assert [o.status for o in report.outcomes if o is not failure] == ["loaded"]
    assert values(raw_rows(warehouse, source), "order_id") == [("OK",)]


def test_not_parquet_and_not_xlsx(store: ObjectStore, warehouse: Warehouse) -> None:
    parquet = make_source("parquet")
    xlsx = make_source("xlsx")
    store.write(key_of(parquet, "x.parquet"), GOOD)
    store.write(key_of(xlsx, "x.xlsx"), GOOD)

    [p] = load_pending(parquet, store, warehouse).outcomes
    [x] = load_pending(xlsx, store, warehouse).outcomes

    assert (p.status, x.status) == ("failed", "failed")
    assert "not a readable Parquet file" in (p.error or "")
    assert "not an Excel .xlsx workbook" in (x.error or "")


def test_xlsx_missing_sheet(store: ObjectStore, warehouse: Warehouse) -> None:
    from openpyxl import Workbook

    source = make_source("xlsx", reader=ReaderOptions(sheet="Orders"))
    book = Workbook()
    book.active.title = "Sheet1"
    sink = io.BytesIO()
    book.save(sink)
    store.write(key_of(source, "x.xlsx"), sink.getvalue())

    [outcome] = load_pending(source, store, warehouse).outcomes

    assert outcome.error == "the workbook has no sheet 'Orders' (sheets: Sheet1)"


def test_fixed_file_loads_after_failure(store: ObjectStore, warehouse: Warehouse) -> None:
    source = make_source()
    key = key_of(source, "fix.csv")
    store.write(key, HEADER + b"F1,2024-03-01,north,1,oops\n")
    [failed] = load_pending(source, store, warehouse).outcomes
    assert failed.status == "failed"
    # Running again does not retry the same bytes.
    assert load_pending(source, store, warehouse).outcomes == []

    store.write(key, HEADER + b"F1,2024-03-01,north,1\n")
    [fixed] = load_pending(source, store, warehouse).outcomes

    assert (fixed.status, fixed.rows) == ("loaded", 1)
    entries = ledger_rows(warehouse, source)
    assert values(entries, "status", "superseded_by") == [
        ("superseded", fixed.file_id),
        ("loaded", None),
    ]
    assert values(raw_rows(warehouse, source), "order_id", "_file_id") == [("F1", fixed.file_id)]
