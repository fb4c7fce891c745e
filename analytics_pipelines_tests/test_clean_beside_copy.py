"""Cleaning beside the raw COPY: what it hands to the clean stage after the COPY, and values
of every kind stored exactly as PostgreSQL's own casts store them.

The rules themselves are tested case by case for every format in test_clean_rules.
"""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from analytics_pipelines.lib.catalog import ColumnSpec, SourceSpec
from analytics_pipelines.lib.clean import FusedClean, clean_pending
from analytics_pipelines.lib.clean.quality import reconciliation_problems
from analytics_pipelines.lib.ingest import load_pending, record_tee
from analytics_pipelines.lib.storage import LocalFolderStore
from analytics_pipelines.lib.tables import clean_table, ledger, quarantine_rows, touched_periods
from analytics_pipelines.lib.warehouse import Warehouse

HEADER = "order_id;line_no;ordered_at;region;quantity;unit_price;paid;ship_date;flag;note\n"
# Every value class the rules know, spelled the awkward ways real files spell them.
TRICKY_LINES = [
    "ORD-0001;1;2024-05-01 10:00:00;north;2;9,50;true;2024-05-02;0;plain",
    "ORD-0001;2;2024-05-01T10:07;south; 3 ;1.234,5;YES;2024-02-29;1;",
    "ORD-0002;+01;2024-10-27 02:30:00;north;100;0;no;;;  spaced  ",
    "ORD-0003;1;2024-03-31 02:30:00;north;1;1e-3;0;2023-02-29;;gap",
    "ORD-0004;1;2024-05-01 10:00:00+05:30;south;0;-1;maybe;2024-13-01;;bad",
    "ORD-0005;1;2024-05-01 10:00:00Z;west;101;abc;;2024-05-01;;bad region",
    ";1;2024-05-01 10:00:00;north;1;1;true;;;empty key",
    "ORD-0006;;2024-05-01;north;1;1;true;;;no line",
    "ORD-0007;1;2024-02-30 10:00:00;north;1;1;true;;;bad timestamp",
    "ORD-0008;1;2024-05-01 24:00:00;north;1;1;true;;;bad hour",
    "ORD-0009;99999999999999999999;2024-05-01 10:00;north;1;1;true;;;overflow",
    "ORD-0010;0000000000000000000001;2024-05-01 10:00:00.123456;north;1;1;true;;;zeros",
    "ORD-0011;1;2024-05-01 10:00:00-0800;north;1;1;TRUE;;;offset",
    "ORD-0012;1;2024-05-01 10:00:00+16;north;1;1;true;;;offset hour",
    "ORD-0013;1; 2024-05-01 10:00 ;north;1;1;true;;;trimmed",
    'ORD-0014;1;2024-05-01 10:00;north;1;2;true;;;"semi;colon ""quoted"""',
    'ORD-0017;1;2024-05-01 12:00;south;1;2;true;;;"two\nlines; one value"',
    "ORD-0001;1;2024-05-01 11:00:00;north;5;7;false;;;last line wins",
    "ORD-15;1;2024-05-01 11:00:00;east;5;7;false;;;pattern and region",
    "ORD-0016;1;now;north;5;NaN;false;;;special words",
]


def tricky_source(name: str) -> SourceSpec:
    return SourceSpec.model_validate(
        {
            "name": name,
            "value_chain": "testing",
            "landing_prefix": f"landing/{name}",
            "format": "csv",
            "reader": {"delimiter": ";", "decimal_separator": ","},
            "columns": [
                ColumnSpec(name="order_id", required=True, pattern="^ORD-[0-9]{4}$"),
                ColumnSpec(name="line_no", type="integer", required=True, min=1),
                ColumnSpec(name="ordered_at", type="timestamp", required=True),
                ColumnSpec(name="region", required=True, allowed_values=["north", "south"]),
                ColumnSpec(name="quantity", type="integer", min=1, max=100),
                ColumnSpec(name="unit_price", type="decimal", min=0),
                ColumnSpec(name="paid", type="boolean"),
                ColumnSpec(name="ship_date", type="date"),
                ColumnSpec(name="flag", type="boolean"),
                ColumnSpec(name="note"),
            ],
            "primary_key": ["order_id", "line_no"],
            "event_time": "ordered_at",
            "timezone": "Europe/Berlin",
        }
    )


def _land(store: LocalFolderStore, source: SourceSpec, text: str) -> None:
    store.write(f"{source.landing_prefix}/orders.csv", text.encode())


def _clean(warehouse: Warehouse, source: SourceSpec) -> list[tuple[Any, ...]]:
    table = clean_table(source)
    data = [table.c[c.name] for c in source.columns]
    with warehouse.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(*data, table.c._line).order_by(*data))]


def _quarantine(warehouse: Warehouse, source: SourceSpec) -> list[tuple[Any, ...]]:
    q = quarantine_rows
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.select(q.c.line, q.c.raw_values, q.c.failures)
            .where(q.c.source == source.name)
            .order_by(q.c.line)
        )
        return [(r[0], r[1], r[2]) for r in rows]


def _ledger(warehouse: Warehouse, source: SourceSpec) -> list[tuple[Any, ...]]:
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.select(
                ledger.c.row_count,
                ledger.c.clean_rows,
                ledger.c.quarantined_rows,
                ledger.c.replaced_rows,
                ledger.c.business_date_min,
                ledger.c.business_date_max,
                ledger.c.cleaned_at.is_not(None),
            ).where(ledger.c.source == source.name)
        )
        return [tuple(r) for r in rows]


def _slots(warehouse: Warehouse, source: SourceSpec) -> list[Any]:
    with warehouse.connect() as conn:
        return list(
            conn.execute(
                sa.select(touched_periods.c.slot_start)
                .where(touched_periods.c.source == source.name)
                .order_by(touched_periods.c.slot_start)
            ).scalars()
        )


@pytest.mark.parametrize("batch_bytes", [record_tee.BATCH_BYTES, 100])
def test_tricky_file_is_cleaned_beside_the_copy_in_any_batch_size(
    warehouse: Warehouse,
    local_store: LocalFolderStore,
    monkeypatch: pytest.MonkeyPatch,
    batch_bytes: int,
) -> None:
    # Tiny batches: records cut at every line end outside quotes, many COPY chunks.
    monkeypatch.setattr(record_tee, "BATCH_BYTES", batch_bytes)
    source = tricky_source(f"t_fused_{uuid.uuid4().hex[:8]}")
    _land(local_store, source, HEADER + "\n".join(TRICKY_LINES) + "\n")
    report = load_pending(source, local_store, warehouse, clean_while_loading=FusedClean)
    assert report.cleaned_file_ids, "the tricky file should be cleaned beside its COPY"
    rows = _clean(warehouse, source)
    assert len(rows) == 7
    quarantined = _quarantine(warehouse, source)
    assert len(quarantined) == 12
    by_line = {line: failures for line, _, failures in quarantined}
    assert {"column": "quantity", "rule": "min", "message": "below the minimum 1"} in by_line[6]
    assert {
        "column": "order_id",
        "rule": "pattern",
        "message": "does not match ^ORD-[0-9]{4}$",
    } in by_line[20]
    assert ("two\nlines; one value", 18) in {(r[9], r[10]) for r in rows}
    assert _ledger(warehouse, source)[0][:4] == (20, 7, 12, 1)
    assert reconciliation_problems(warehouse, source) == []


def test_key_already_in_clean_leaves_the_file_to_the_merge(
    warehouse: Warehouse, local_store: LocalFolderStore
) -> None:
    source = tricky_source(f"t_fused_{uuid.uuid4().hex[:8]}")
    local_store.write(
        f"{source.landing_prefix}/a.csv",
        (HEADER + "ORD-0001;1;2024-05-01 10:00;north;1;1;true;;;first\n").encode(),
    )
    first = load_pending(source, local_store, warehouse, clean_while_loading=FusedClean)
    assert first.cleaned_file_ids
    local_store.write(
        f"{source.landing_prefix}/b.csv",
        (HEADER + "ORD-0001;1;2024-05-01 10:00;north;2;1;true;;;second\n").encode(),
    )
    second = load_pending(source, local_store, warehouse, clean_while_loading=FusedClean)
    assert not second.cleaned_file_ids
    clean_pending(warehouse, source)
    rows = _clean(warehouse, source)
    assert [(r[4], r[9]) for r in rows] == [(2, "second")]
    assert reconciliation_problems(warehouse, source) == []


def test_key_repeated_across_batches_is_left_to_the_clean_stage(
    warehouse: Warehouse, local_store: LocalFolderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(record_tee, "BATCH_BYTES", 60)
    source = tricky_source(f"t_fused_{uuid.uuid4().hex[:8]}")
    lines = [f"ORD-{i:04d};1;2024-05-01 10:00;north;{i % 50 + 1};1;true;;;n{i}" for i in range(20)]
    lines.append("ORD-0003;1;2024-05-01 11:00;south;9;1;true;;;again, later")
    _land(local_store, source, HEADER + "\n".join(lines))
    report = load_pending(source, local_store, warehouse, clean_while_loading=FusedClean)
    assert not report.cleaned_file_ids
    clean_pending(warehouse, source)
    rows = _clean(warehouse, source)
    assert len(rows) == 20
    assert [r[9] for r in rows if r[0] == "ORD-0003"] == ["again, later"]
    assert _ledger(warehouse, source)[0][:4] == (21, 20, 0, 1)
    assert reconciliation_problems(warehouse, source) == []


def _typed_source(name: str) -> SourceSpec:
    return SourceSpec.model_validate(
        {
            "name": name,
            "value_chain": "testing",
            "landing_prefix": f"landing/{name}",
            "format": "csv",
            "columns": [
                ColumnSpec(name="id", type="integer", required=True),
                ColumnSpec(name="at", type="timestamp", required=True),
                ColumnSpec(name="shipped_at", type="timestamp"),
                ColumnSpec(name="amount", type="decimal"),
                ColumnSpec(name="paid", type="boolean"),
                ColumnSpec(name="due", type="date"),
                ColumnSpec(name="note"),
            ],
            "primary_key": ["id"],
            "event_time": "at",
            "timezone": "America/New_York",
        }
    )


def _typed_load(
    warehouse: Warehouse, store: LocalFolderStore, text: str
) -> tuple[SourceSpec, bool]:
    source = _typed_source(f"t_typed_{uuid.uuid4().hex[:8]}")
    store.write(f"{source.landing_prefix}/typed.csv", text.encode())
    beside = bool(
        load_pending(source, store, warehouse, clean_while_loading=FusedClean).cleaned_file_ids
    )
    clean_pending(warehouse, source)
    return source, beside


def _cast_as_postgres(warehouse: Warehouse, source: SourceSpec, text: str) -> list[tuple[Any, ...]]:
    """The rows' values as PostgreSQL's own casts of the text store them (read in the
    source's zone, printed in UTC), empty fields as NULL."""
    kinds = {"integer": "bigint", "decimal": "numeric", "boolean": "boolean", "date": "date"}
    kinds |= {"timestamp": "timestamptz", "string": "text"}
    rows = list(csv.reader(io.StringIO(text)))[1:]
    out = []
    with warehouse.begin() as conn:
        for row in rows:
            conn.execute(sa.select(sa.func.set_config("TimeZone", source.timezone, True)))
            typed = [
                conn.execute(sa.text(f"SELECT CAST(:v AS {kinds[c.type]})"), {"v": v}).scalar()
                if v != ""
                else None
                for c, v in zip(source.columns, row, strict=True)
            ]
            conn.execute(sa.select(sa.func.set_config("TimeZone", "UTC", True)))
            out.append(
                tuple(
                    conn.execute(
                        sa.select(
                            *(
                                sa.cast(sa.literal(v), sa.Text) if v is not None else sa.null()
                                for v in typed
                            )
                        )
                    ).one()
                )
            )
    return sorted(out, key=lambda r: int(r[0]))


def test_typed_values_of_every_kind_are_what_postgres_casts_store(
    warehouse: Warehouse, local_store: LocalFolderStore
) -> None:
    # Second timestamp column with offsets, far-future and historic values, nulls everywhere,
    # decimals with signs, leading zeros and scales, both DST changes of New York.
    text = (
        "id,at,shipped_at,amount,paid,due,note\n"
        "1,2024-03-10 02:30:00,2024-03-10T07:30:00Z,0001.50,yes,2024-02-29,gap\n"
        "2,2024-11-03 01:30:00,,-0.000,,,overlap\n"
        "3,2024-11-03 01:30,9999-12-31 23:59:59,+12.3400,FALSE,9999-12-31,\n"
        '4,2024-06-01T12:00:00.5,1950-06-01 12:00:00-04:00,,0,0001-01-01,"quoted, comma"\n'
        "5,2024-06-01 12:00:00+02,1883-11-18 12:03:58,123456789.123456789,1,,historic\n"
    )
    source, beside = _typed_load(warehouse, local_store, text)
    assert beside
    assert _rows_as_text(warehouse, source) == _cast_as_postgres(warehouse, source, text)
    assert reconciliation_problems(warehouse, source) == []


def _rows_as_text(warehouse: Warehouse, source: SourceSpec) -> list[tuple[Any, ...]]:
    """Every clean value as PostgreSQL prints it (scale of numerics included), in UTC."""
    table = clean_table(source)
    with warehouse.begin() as conn:
        conn.execute(sa.select(sa.func.set_config("TimeZone", "UTC", True)))
        columns = [sa.cast(table.c[c.name], sa.Text) for c in source.columns]
        return [tuple(r) for r in conn.execute(sa.select(*columns).order_by(table.c.id))]


def test_exponent_decimals_are_typed_while_loading_as_numeric_input_types_them(
    warehouse: Warehouse, local_store: LocalFolderStore
) -> None:
    text = (
        "id,at,shipped_at,amount,paid,due,note\n"
        "1,2024-06-01 12:00,,1.5e2,,,\n"
        "2,2024-06-01 12:00,,1.2E-3,,,\n"
        "3,2024-06-01 12:00,,7.25,,,\n"
    )
    source, beside = _typed_load(warehouse, local_store, text)
    assert beside
    assert [r[3] for r in _rows_as_text(warehouse, source)] == ["150", "0.0012", "7.25"]


def test_decimals_beyond_the_encoder_are_cleaned_after_the_copy_as_postgres_casts_them(
    warehouse: Warehouse, local_store: LocalFolderStore
) -> None:
    text = "id,at,shipped_at,amount,paid,due,note\n1,2024-06-01 12:00,,1e30,,,\n"
    source, beside = _typed_load(warehouse, local_store, text)
    assert not beside
    assert _rows_as_text(warehouse, source) == _cast_as_postgres(warehouse, source, text)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # The quarantined row (quantity 0) still counts for the file's business dates, as in SQL.
        (
            [
                "ORD-0001;1;2024-05-01 10:00:00;north;1;1;true;;;",
                "ORD-0002;1;2024-04-01 09:00:00;north;0;1;true;;;quarantined, earliest",
                "ORD-0003;1;2024-05-03 23:59:59;south;1;1;true;;;latest",
            ],
            ["2024-04-01", "2024-05-03"],
        ),
        # 23:30 at -05:00 is 06:30 the next day in Berlin, though its text sorts below the
        # latest plain value: the text shortcut must see the zone and step aside.
        (
            [
                "ORD-0001;1;2024-05-01 10:00:00;north;1;1;true;;;",
                "ORD-0002;1;2024-05-09 23:30:00-05:00;south;1;1;true;;;zoned, latest in Berlin",
                "ORD-0003;1;2024-05-09 23:45:00;north;1;1;true;;;latest text",
            ],
            ["2024-05-01", "2024-05-10"],
        ),
    ],
    ids=["quarantined-row-counts", "zoned-value-among-plain"],
)
def test_business_dates_come_from_every_raw_row(
    warehouse: Warehouse, local_store: LocalFolderStore, lines: list[str], expected: list[str]
) -> None:
    source = tricky_source(f"t_fused_{uuid.uuid4().hex[:8]}")
    _land(local_store, source, HEADER + "\n".join(lines))
    report = load_pending(source, local_store, warehouse, clean_while_loading=FusedClean)
    assert report.cleaned_file_ids
    assert reconciliation_problems(warehouse, source) == []
    dates = _ledger(warehouse, source)[0][4:6]
    assert [d.isoformat() for d in dates] == expected
