"""Small edges of real deliveries: blank lines at the end of an export, NUL bytes, NUL in a catalog."""

from __future__ import annotations

import csv
import gzip
import io
import random
import shutil
import uuid
from pathlib import Path

import pytest

from analytics_pipelines.lib.catalog import CatalogError, load_catalog
from analytics_pipelines.lib.chunk_reader import ChunkReader
from analytics_pipelines.lib.clean import FusedClean
from analytics_pipelines.lib.clean.quality import reconciliation_problems
from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.ingest.streams import chunks_of, without_trailing_blank_lines
from analytics_pipelines.lib.kpi.expressions import ExpressionError, parse_filter
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR
from analytics_pipelines.lib.storage import LocalFolderStore, ObjectStore
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_clean_beside_copy import (
    HEADER as TRICKY_HEADER,
)
from analytics_pipelines_tests.test_clean_beside_copy import (
    TRICKY_LINES,
    _clean,
    _quarantine,
    tricky_source,
)
from analytics_pipelines_tests.test_ingest_helpers import (
    key_of,
    ledger_rows,
    make_source,
    raw_rows,
)

HEADER = "order_id,ordered_at,region,amount"
ROWS = ["A1,2024-03-01 10:00,north,1.5", "A2,2024-03-01 11:00,south,2", 'A3,2024-03-02,"we,st",3']


def _export(newline: str, blank_lines: int) -> bytes:
    return (newline.join([HEADER, *ROWS]) + newline + newline * blank_lines).encode()


def _data_rows(data: bytes) -> list[list[str]]:
    """The data rows as Python's csv module reads them, blank rows left out."""
    rows = list(csv.reader(io.StringIO(data.decode())))
    return [r for r in rows[1:] if r]


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("blank_lines", [1, 3])
def test_blank_lines_at_the_end_of_a_csv_are_ignored(
    blank_lines: int, newline: str, compressed: bool, store: ObjectStore, warehouse: Warehouse
) -> None:
    source = make_source()
    data = _export(newline, blank_lines)
    name = "export.csv.gz" if compressed else "export.csv"
    store.write(key_of(source, name), gzip.compress(data) if compressed else data)

    report = load_pending(source, store, warehouse)

    [entry] = ledger_rows(warehouse, source)
    assert (entry["status"], entry["error"]) == ("loaded", None)
    expected = _data_rows(data)
    assert entry["row_count"] == len(expected) == 3
    loaded = [
        [r["order_id"], r["ordered_at"], r["region"], r["amount"]]
        for r in raw_rows(warehouse, source)
    ]
    assert loaded == expected
    assert report.rows == 3


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_blank_lines_at_the_end_change_nothing_of_the_clean_rows(
    newline: str, local_store: LocalFolderStore, warehouse: Warehouse
) -> None:
    lines = [line for line in TRICKY_LINES if "\n" not in line]
    text = TRICKY_HEADER.rstrip("\n") + newline + newline.join(lines) + newline
    results = []
    for trailing in (0, 3):
        source = tricky_source(f"t_blank_{uuid.uuid4().hex[:8]}")
        local_store.write(key_of(source, "orders.csv"), (text + newline * trailing).encode())
        report = load_pending(source, local_store, warehouse, clean_while_loading=FusedClean)
        assert report.cleaned_file_ids
        [entry] = ledger_rows(warehouse, source)
        assert (entry["status"], entry["row_count"]) == ("loaded", len(lines))
        assert reconciliation_problems(warehouse, source) == []
        results.append((_clean(warehouse, source), _quarantine(warehouse, source)))
    assert results[0] == results[1]
    assert len(results[0][0]) + len(results[0][1]) == len(lines) - 1  # one key repeated


def test_a_blank_line_inside_a_csv_is_still_reported(
    local_store: LocalFolderStore, warehouse: Warehouse
) -> None:
    source = make_source()
    data = (HEADER + "\n" + ROWS[0] + "\n\n" + ROWS[1] + "\n\n").encode()
    local_store.write(key_of(source, "gap.csv"), data)
    load_pending(source, local_store, warehouse)
    [entry] = ledger_rows(warehouse, source)
    assert entry["status"] == "failed"
    assert entry["error"].startswith("line 3: fewer fields")


def test_trailing_blank_lines_reader_holds_back_only_the_last_run() -> None:
    rng = random.Random(7)
    body = b"".join(b"r%d,%d\r\n" % (i, rng.randrange(10**6)) for i in range(20_000))
    data = body + b"\r\n" * 5
    for size in (1, 5, 4096, 1 << 20):
        reader = _blank_lines_dropped(data)
        pieces = []
        while piece := reader.read(size):
            assert len(piece) <= size
            pieces.append(piece)
        assert b"".join(pieces) == body
    assert _blank_lines_dropped(b"\n\n\n").read() == b""
    assert _blank_lines_dropped(b"a\n\nb").read() == b"a\n\nb"


def _blank_lines_dropped(data: bytes) -> ChunkReader:
    return ChunkReader(without_trailing_blank_lines(chunks_of(io.BytesIO(data))))


def test_a_nul_byte_in_a_csv_is_named_with_its_line(
    store: ObjectStore, warehouse: Warehouse
) -> None:
    source = make_source()
    store.write(key_of(source, "good.csv"), (HEADER + "\n" + ROWS[0] + "\n").encode())
    bad = (HEADER + "\n" + ROWS[1] + "\nN1,2024-03-01,no\x00rth,1\n").encode()
    store.write(key_of(source, "nul.csv"), bad)

    load_pending(source, store, warehouse)

    entries = {e["object_key"].rsplit("/", 1)[-1]: e for e in ledger_rows(warehouse, source)}
    assert entries["good.csv"]["status"] == "loaded"
    failed = entries["nul.csv"]
    assert failed["status"] == "failed"
    assert failed["error"].startswith("line 3: the file contains a NUL byte (0x00)")
    assert "encoding" not in failed["error"]
    assert [r["order_id"] for r in raw_rows(warehouse, source)] == ["A1"]


def test_a_nul_in_a_kpi_filter_literal_is_refused_with_its_position() -> None:
    with pytest.raises(ExpressionError) as refused:
        parse_filter("status = 'can\x00celled'", {"status": "string"})
    assert refused.value.position == 13
    assert "NUL character" in str(refused.value)
    assert "\x00" not in str(refused.value)


def test_a_catalog_with_a_nul_in_a_filter_does_not_load(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG_DIR, catalog)
    sales = catalog / "kpis" / "sales.yaml"
    text = sales.read_text()
    assert "filter: status != 'cancelled'" in text
    sales.write_text(
        text.replace("filter: status != 'cancelled'", "filter: \"status != 'can\\0celled'\"", 1)
    )

    with pytest.raises(CatalogError) as refused:
        load_catalog(catalog)
    message = str(refused.value)
    assert "sales.yaml" in message
    assert "filter: at position 14: a NUL character" in message


def test_a_nul_in_a_json_lines_value_is_named_with_its_line(
    local_store: LocalFolderStore, warehouse: Warehouse
) -> None:
    source = make_source("jsonl")
    lines = [
        b'{"order_id": "J1", "ordered_at": "2024-03-01", "region": "north", "amount": 1}',
        b'{"order_id": "J2", "ordered_at": "2024-03-01", "region": "no\\u0000rth", "amount": 1}',
    ]
    local_store.write(key_of(source, "nul.jsonl"), b"\n".join(lines) + b"\n")
    load_pending(source, local_store, warehouse)
    [entry] = ledger_rows(warehouse, source)
    assert entry["status"] == "failed"
    assert "NUL" in entry["error"], entry["error"]
    assert "line 2" in entry["error"], entry["error"]
