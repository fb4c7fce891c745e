"""Rule by rule, every format: the same raw values give the same clean rows and quarantine.

One case per rule (and per awkward but valid spelling), delivered as a CSV cleaned beside its
COPY, a CSV cleaned after it (the clean stage alone), a Latin-1 CSV, JSON lines, Parquet,
Excel, a correction of an earlier version of the same file, and after a rebuild. Passing
values must be stored exactly as PostgreSQL's own cast of the text stores them; failing rows
must list exactly the rules they break.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from openpyxl import Workbook

from analytics_pipelines.lib.catalog import SourceSpec
from analytics_pipelines.lib.clean import FusedClean, clean_pending
from analytics_pipelines.lib.clean.quality import reconciliation_problems
from analytics_pipelines.lib.clean.replay import rebuild_clean
from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.storage import LocalFolderStore
from analytics_pipelines.lib.tables import clean_table, ledger, quarantine_rows
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_clean_beside_copy import tricky_source

# The orders columns of every rule kind (test_clean_beside_copy's), without its second flag.
COLUMNS = [c for c in tricky_source("t_rules").columns if c.name != "flag"]
NAMES = [c.name for c in COLUMNS]
BASE = {
    "line_no": "1",
    "ordered_at": "2024-05-01 10:00:00",
    "region": "north",
    "quantity": "2",
    "unit_price": "9,50",
    "paid": "true",
    "ship_date": "2024-05-02",
    "note": "plain",
}
LONG_DECIMAL = "0," + "0" * 30 + "1"

# (what the case shows, values that differ from BASE, rules it breaks: empty = it lands).
CASES: list[tuple[str, dict[str, str], set[tuple[str, str]]]] = [
    ("plain row", {}, set()),
    ("signed, padded integers", {"line_no": "+01", "quantity": " 3 "}, set()),
    ("leading zeros", {"line_no": "0000000000000000000001"}, set()),
    ("exponent decimal", {"unit_price": "1e-3"}, set()),
    ("decimal keeps its scale", {"unit_price": "12,3400"}, set()),
    ("decimal beyond 16 fraction digits", {"unit_price": LONG_DECIMAL}, set()),
    ("flags in other spellings", {"paid": "YES"}, set()),
    ("leap day", {"ship_date": "2024-02-29"}, set()),
    ("T separator, no seconds", {"ordered_at": "2024-05-01T10:07"}, set()),
    ("offset with minutes", {"ordered_at": "2024-05-01 10:00:00+05:30"}, set()),
    ("UTC designator", {"ordered_at": "2024-05-01 10:00:00Z"}, set()),
    ("offset without colon", {"ordered_at": "2024-05-01 10:00:00-0800"}, set()),
    ("microseconds", {"ordered_at": "2024-05-01 10:00:00.123456"}, set()),
    ("more than microseconds", {"ordered_at": "2024-05-01 10:14:59.9999999"}, set()),
    ("wall time in the DST gap", {"ordered_at": "2024-03-31 02:30:00"}, set()),
    ("wall time that occurs twice", {"ordered_at": "2024-10-27 02:30:00"}, set()),
    ("before 2000", {"ordered_at": "1999-12-31 23:50:00"}, set()),
    ("value with delimiter and quotes", {"note": 'semi;colon "quoted"'}, set()),
    ("value over two lines", {"note": "two\nlines"}, set()),
    ("text beyond ASCII", {"note": "Grüße, café"}, set()),
    ("required string missing", {"order_id": ""}, {("order_id", "required")}),
    ("pattern", {"order_id": "ORD-15"}, {("order_id", "pattern")}),
    ("integer overflow", {"line_no": "99999999999999999999"}, {("line_no", "type")}),
    ("integer with a fraction", {"line_no": "1,5"}, {("line_no", "type")}),
    ("below min", {"line_no": "0"}, {("line_no", "min")}),
    ("above max", {"quantity": "101"}, {("quantity", "max")}),
    ("decimal below min", {"unit_price": "-1"}, {("unit_price", "min")}),
    ("decimal just below min", {"unit_price": "-0," + "0" * 20 + "1"}, {("unit_price", "min")}),
    ("not a decimal", {"unit_price": "abc"}, {("unit_price", "type")}),
    ("NaN is not data", {"unit_price": "NaN"}, {("unit_price", "type")}),
    ("not a flag", {"paid": "maybe"}, {("paid", "type")}),
    ("no such day", {"ship_date": "2023-02-29"}, {("ship_date", "type")}),
    ("no such month", {"ship_date": "2024-13-01"}, {("ship_date", "type")}),
    ("no such timestamp", {"ordered_at": "2024-02-30 10:00:00"}, {("ordered_at", "type")}),
    ("hour 24", {"ordered_at": "2024-05-01 24:00:00"}, {("ordered_at", "type")}),
    ("second 60", {"ordered_at": "2024-05-01 10:00:60"}, {("ordered_at", "type")}),
    ("space-padded month", {"ordered_at": "2024- 5-01 10:00:00"}, {("ordered_at", "type")}),
    ("signed year", {"ordered_at": "+024-05-01 10:00:00"}, {("ordered_at", "type")}),
    ("five-digit year", {"ordered_at": "10000-05-01 10:00:00"}, {("ordered_at", "type")}),
    ("year 0", {"ship_date": "0000-05-02"}, {("ship_date", "type")}),
    ("space-padded day", {"ship_date": "2024-05- 2"}, {("ship_date", "type")}),
    ("offset hour 16", {"ordered_at": "2024-05-01 10:00:00+16"}, {("ordered_at", "type")}),
    ("offset minutes 75", {"ordered_at": "2024-05-01 10:00:00+05:75"}, {("ordered_at", "type")}),
    ("special word", {"ordered_at": "now"}, {("ordered_at", "type")}),
    ("not allowed", {"region": "west"}, {("region", "allowed_values")}),
    (
        "several rules at once",
        {"region": "", "quantity": "0", "paid": "maybe"},
        {("region", "required"), ("quantity", "min"), ("paid", "type")},
    ),
]
# A key delivered twice in one file: the last line wins.
REPEATED = ("ORD-0001", "1")

MISSING = "(no order id)"
# Values typed beside the COPY in polars must be exact; these the binary encoder does not
# write, so a file holding them is cleaned after its COPY (same rules, PostgreSQL's casts).
CLEANED_AFTER_COPY = {"decimal beyond 16 fraction digits", "more than microseconds"}
BESIDE = {"csv-beside", "jsonl", "parquet"}
MODES = [
    "csv-beside",
    "csv-declined",
    "csv-after",
    "csv-latin1",
    "jsonl",
    "parquet",
    "xlsx",
    "correction",
]


def _rows(mode: str = "") -> list[dict[str, str]]:
    """One row per case (order id ORD-<case number>), then the repeated key. For the modes
    cleaned beside the COPY, without the cases that leave a file to the clean stage."""
    rows = [
        {"order_id": f"ORD-{i:04d}", **BASE, **values}
        for i, (what, values, _) in enumerate(CASES)
        if mode not in BESIDE or what not in CLEANED_AFTER_COPY
    ]
    first = dict(rows[1], order_id=REPEATED[0], line_no=REPEATED[1], note="the last line wins")
    return [*rows, first]


def _source(fmt: str, encoding: str = "utf-8") -> SourceSpec:
    name = f"t_rules_{uuid.uuid4().hex[:8]}"
    return SourceSpec.model_validate(
        {
            "name": name,
            "value_chain": "testing",
            "landing_prefix": f"landing/{name}",
            "format": fmt,
            "reader": {"delimiter": ";", "decimal_separator": ",", "encoding": encoding},
            "columns": COLUMNS,
            "primary_key": ["order_id", "line_no"],
            "event_time": "ordered_at",
            "timezone": "Europe/Berlin",
        }
    )


def _cell(value: str) -> str | None:
    """Missing values are absent (empty CSV field, JSON null, empty cell)."""
    return value if value != "" else None


def _file(fmt: str, rows: list[dict[str, str]], encoding: str = "utf-8") -> tuple[str, bytes]:
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, delimiter=";", lineterminator="\n")
        writer.writerow(NAMES)
        writer.writerows([[r[n] for n in NAMES] for r in rows])
        return "orders.csv", out.getvalue().encode(encoding)
    if fmt == "jsonl":
        lines = [json.dumps({n: _cell(r[n]) for n in NAMES}) for r in rows]
        return "orders.jsonl", ("\n".join(lines) + "\n").encode()
    if fmt == "parquet":
        table = pa.table({n: pa.array([_cell(r[n]) for r in rows], pa.string()) for n in NAMES})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return "orders.parquet", sink.getvalue()
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(NAMES)
    for r in rows:
        sheet.append([_cell(r[n]) for n in NAMES])
    sink = io.BytesIO()
    workbook.save(sink)
    return "orders.xlsx", sink.getvalue()


def _deliver(warehouse: Warehouse, store: LocalFolderStore, mode: str) -> SourceSpec:
    fmt = mode if mode in ("jsonl", "parquet", "xlsx") else "csv"
    source = _source(fmt, "latin-1" if mode == "csv-latin1" else "utf-8")
    beside = None if mode == "csv-after" else FusedClean
    rows = _rows(mode)
    if mode == "correction":
        # An earlier version of the same file: every key, other values, already in clean.
        earlier = [dict(r, quantity="7", note="earlier") for r in rows]
        name, body = _file("csv", earlier)
        store.write(f"{source.landing_prefix}/{name}", body)
        load_pending(source, store, warehouse, clean_while_loading=beside)
        clean_pending(warehouse, source)
    name, body = _file(source.format, rows, source.reader.encoding)
    store.write(f"{source.landing_prefix}/{name}", body)
    report = load_pending(source, store, warehouse, clean_while_loading=beside)
    assert bool(report.cleaned_file_ids) == (mode in BESIDE)
    clean_pending(warehouse, source)
    return source


def _clean_text(warehouse: Warehouse, source: SourceSpec) -> dict[tuple[str, str], list[Any]]:
    """Clean rows as PostgreSQL prints them (in UTC), by key."""
    table = clean_table(source)
    with warehouse.begin() as conn:
        conn.execute(sa.select(sa.func.set_config("TimeZone", "UTC", True)))
        rows = conn.execute(sa.select(*(sa.cast(table.c[n], sa.Text) for n in NAMES)))
        return {(r[0], r[1]): list(r) for r in rows}


def _expected_text(warehouse: Warehouse, row: dict[str, str]) -> list[Any]:
    """What PostgreSQL's own casts store for a row's text, printed in UTC: the normalised
    text (trimmed, decimal comma → point) cast in the source's zone."""
    values: list[Any] = []
    with warehouse.begin() as conn:
        conn.execute(sa.select(sa.func.set_config("TimeZone", "Europe/Berlin", True)))
        for column in COLUMNS:
            text = row[column.name] if column.type == "string" else row[column.name].strip(" ")
            if column.type == "decimal":
                text = text.replace(",", ".")
            if text == "":
                values.append(None)
                continue
            sql_type = {
                "string": "text",
                "integer": "bigint",
                "decimal": "numeric",
                "boolean": "boolean",
                "date": "date",
                "timestamp": "timestamptz",
            }[column.type]
            typed = conn.execute(sa.text(f"SELECT CAST(:v AS {sql_type})"), {"v": text}).scalar()
            values.append(typed)
        conn.execute(sa.select(sa.func.set_config("TimeZone", "UTC", True)))
        printed = conn.execute(
            sa.select(
                *(sa.cast(sa.literal(v), sa.Text) if v is not None else sa.null() for v in values)
            )
        ).one()
    return list(printed)


def _quarantine(warehouse: Warehouse, source: SourceSpec) -> dict[str, set[tuple[str, str]]]:
    q = quarantine_rows
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.select(q.c.raw_values, q.c.failures)
            .join(ledger, ledger.c.file_id == q.c.file_id)
            .where(q.c.source == source.name, ledger.c.status == "loaded")
        )
        return {
            r.raw_values["order_id"] or MISSING: {(f["column"], f["rule"]) for f in r.failures}
            for r in rows
        }


@pytest.fixture(scope="module")
def expected(warehouse: Warehouse) -> dict[tuple[str, str], list[Any]]:
    """Every landing row's values as PostgreSQL's own casts store them."""
    rows = _rows()
    landing = {
        (r["order_id"], r["line_no"]): r
        for r, (_, _, broken) in zip(rows, [*CASES, ("", {}, set())], strict=True)
        if not broken
    }
    return {key: _expected_text(warehouse, row) for key, row in landing.items()}


@pytest.mark.parametrize("mode", MODES)
def test_every_rule_decides_the_same_in_every_format(
    warehouse: Warehouse,
    local_store: LocalFolderStore,
    mode: str,
    expected: dict[tuple[str, str], list[Any]],
) -> None:
    source = _deliver(warehouse, local_store, mode)
    clean = _clean_text(warehouse, source)
    delivered = {(r["order_id"], r["line_no"]) for r in _rows(mode)}
    # Keys as stored: "+01" and "0000…1" are line 1 of their order.
    want = {(v[0], v[1]): v for k, v in expected.items() if k in delivered}
    assert clean == want
    assert clean[("ORD-0001", "1")][8] == "the last line wins"
    quarantined = _quarantine(warehouse, source)
    assert quarantined == {
        (values.get("order_id", f"ORD-{i:04d}") or MISSING): rules
        for i, (_, values, rules) in enumerate(CASES)
        if rules
    }
    assert reconciliation_problems(warehouse, source) == []


def test_stored_values_are_what_postgres_casts_store(
    expected: dict[tuple[str, str], list[Any]],
) -> None:
    """The oracle itself, on values worked out by hand."""
    by_case = {CASES[int(k[0][4:])][0]: v for k, v in expected.items() if k[0][4:].isdigit()}
    assert by_case["T separator, no seconds"][2] == "2024-05-01 08:07:00+00"
    assert by_case["offset with minutes"][2] == "2024-05-01 04:30:00+00"
    assert by_case["more than microseconds"][2] == "2024-05-01 08:15:00+00"
    assert by_case["exponent decimal"][5] == "0.001"
    assert by_case["decimal keeps its scale"][5] == "12.3400"
    assert by_case["decimal beyond 16 fraction digits"][5] == "0." + "0" * 30 + "1"


def test_a_rebuild_gives_the_same_rows_and_quarantine(
    warehouse: Warehouse, local_store: LocalFolderStore
) -> None:
    source = _deliver(warehouse, local_store, "csv-beside")
    before = (_clean_text(warehouse, source), _quarantine(warehouse, source))
    rebuild_clean(warehouse, source)
    assert (_clean_text(warehouse, source), _quarantine(warehouse, source)) == before
    assert reconciliation_problems(warehouse, source) == []
