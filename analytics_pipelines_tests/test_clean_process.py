"""Clean stage: typing, every validation rule, de-duplication, corrections, reconciliation."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from analytics_pipelines.lib.catalog import ColumnSpec, ReaderOptions, SourceSpec
from analytics_pipelines.lib.clean import clean_pending
from analytics_pipelines.lib.clean.quality import reconciliation_problems
from analytics_pipelines.lib.ingest.raw_tables import attach_file_table, open_file_table
from analytics_pipelines.lib.tables import (
    ledger,
    quarantine_rows,
    raw_table,
    touched_periods,
)
from analytics_pipelines.lib.warehouse import Warehouse

# ---------------------------------------------------------------------------------------------
# Helpers shared by the test_clean_* modules: they play the ingestion stage (ledger + raw rows).


def make_source(**updates: Any) -> SourceSpec:
    """An orders-like source with a unique name."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    spec = SourceSpec(
        name=name,
        value_chain="testing",
        landing_prefix=f"landing/{name}",
        format="csv",
        columns=[
            ColumnSpec(name="order_id", type="string", required=True, pattern="^ORD-[0-9]{4}$"),
            ColumnSpec(name="line_no", type="integer", required=True, min=1),
            ColumnSpec(name="ordered_at", type="timestamp", required=True),
            ColumnSpec(
                name="region", type="string", required=True, allowed_values=["north", "south"]
            ),
            ColumnSpec(name="quantity", type="integer", min=1, max=100),
            ColumnSpec(name="unit_price", type="decimal", min=0),
            ColumnSpec(name="paid", type="boolean"),
            ColumnSpec(name="ship_date", type="date"),
        ],
        primary_key=["order_id", "line_no"],
        event_time="ordered_at",
        timezone="Europe/Berlin",
    )
    return spec.model_copy(update=updates) if updates else spec


def row(**values: str | None) -> dict[str, str | None]:
    base: dict[str, str | None] = {
        "order_id": "ORD-0001",
        "line_no": "1",
        "ordered_at": "2024-05-01 10:00:00",
        "region": "north",
        "quantity": "2",
        "unit_price": "9.50",
        "paid": "true",
        "ship_date": "2024-05-02",
    }
    base.update(values)
    return base


def land(
    warehouse: Warehouse,
    source: SourceSpec,
    rows: Sequence[dict[str, str | None]],
    *,
    key: str | None = None,
    extra_columns: Sequence[str] = (),
) -> int:
    """Play ingestion: a ledger row (status loaded) and the raw rows of one file version."""
    table = raw_table(source, extra_columns)
    with warehouse.begin() as conn:
        table.create(conn, checkfirst=True)
        live = {
            r[0]
            for r in conn.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = 'raw' AND table_name = :t"
                ),
                {"t": source.name},
            )
        }
        for column in table.columns:
            if column.name not in live:
                conn.execute(
                    sa.text(f'ALTER TABLE raw."{source.name}" ADD COLUMN "{column.name}" text')
                )
        file_id = conn.execute(
            sa.insert(ledger)
            .values(
                source=source.name,
                object_key=key or f"landing/{source.name}/{uuid.uuid4().hex}.csv",
                etag=uuid.uuid4().hex,
                size_bytes=1,
                status="loaded",
                row_count=len(rows),
                loaded_at=sa.func.now(),
            )
            .returning(ledger.c.file_id)
        ).scalar_one()
        open_file_table(conn, source.name, file_id, [])
        attach_file_table(conn, source.name, file_id)
        if rows:
            conn.execute(
                sa.insert(table),
                [{**r, "_file_id": file_id, "_line": i} for i, r in enumerate(rows, start=1)],
            )
    return int(file_id)


def correct(
    warehouse: Warehouse, source: SourceSpec, old_file_id: int, rows: Sequence[dict[str, Any]]
) -> int:
    """Play ingestion of a corrected file: supersede the old version and delete its raw rows."""
    with warehouse.connect() as conn:
        key = conn.execute(
            sa.select(ledger.c.object_key).where(ledger.c.file_id == old_file_id)
        ).scalar_one()
    new_id = land(warehouse, source, rows, key=key)
    with warehouse.begin() as conn:
        conn.execute(
            sa.update(ledger)
            .where(ledger.c.file_id == old_file_id)
            .values(status="superseded", superseded_by=new_id)
        )
        raw = raw_table(source)
        conn.execute(sa.delete(raw).where(raw.c._file_id == old_file_id))
    return new_id


def clean_rows(warehouse: Warehouse, source: SourceSpec) -> list[dict[str, Any]]:
    with warehouse.connect() as conn:
        result = conn.execute(
            sa.text(f'SELECT * FROM clean."{source.name}" ORDER BY order_id, line_no')
        )
        return [dict(r._mapping) for r in result]


def quarantined(warehouse: Warehouse, source: SourceSpec) -> list[dict[str, Any]]:
    with warehouse.connect() as conn:
        result = conn.execute(
            sa.select(quarantine_rows)
            .where(quarantine_rows.c.source == source.name)
            .order_by(quarantine_rows.c.file_id, quarantine_rows.c.line)
        )
        return [dict(r._mapping) for r in result]


def failed_rules(entry: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["column"], f["rule"]) for f in entry["failures"]}


def ledger_counts(warehouse: Warehouse, file_id: int) -> tuple[int, int, int, int]:
    with warehouse.connect() as conn:
        r = conn.execute(
            sa.select(
                ledger.c.row_count,
                ledger.c.clean_rows,
                ledger.c.quarantined_rows,
                ledger.c.replaced_rows,
            ).where(ledger.c.file_id == file_id)
        ).one()
        return (r[0], r[1], r[2], r[3])


def slots(warehouse: Warehouse, source: SourceSpec, file_id: int | None = None) -> set[datetime]:
    with warehouse.connect() as conn:
        query = sa.select(touched_periods.c.slot_start).where(
            touched_periods.c.source == source.name
        )
        if file_id is not None:
            query = query.where(touched_periods.c.file_id == file_id)
        return {r[0] for r in conn.execute(query)}


def assert_reconciles(warehouse: Warehouse, source: SourceSpec) -> None:
    assert reconciliation_problems(warehouse, source) == []


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------


def test_valid_rows_are_typed_into_clean(warehouse: Warehouse) -> None:
    source = make_source()
    file_id = land(warehouse, source, [row(), row(line_no="2", paid="NO", unit_price=" 3 ")])

    report = clean_pending(warehouse, source)

    assert (report.files, report.clean_rows, report.quarantined_rows) == (1, 2, 0)
    rows = clean_rows(warehouse, source)
    assert rows[0]["line_no"] == 1
    assert rows[0]["ordered_at"] == utc(2024, 5, 1, 8, 0)  # Berlin summer time is UTC+2
    assert rows[0]["unit_price"] == Decimal("9.50")
    assert rows[0]["paid"] is True
    assert rows[0]["ship_date"] == date(2024, 5, 2)
    assert rows[0]["_file_id"] == file_id and rows[0]["_line"] == 1
    assert rows[1]["paid"] is False and rows[1]["unit_price"] == Decimal("3")
    assert ledger_counts(warehouse, file_id) == (2, 2, 0, 0)
    assert slots(warehouse, source, file_id) == {utc(2024, 5, 1, 8, 0)}
    assert_reconciles(warehouse, source)
    # Nothing pending: a second run does nothing.
    assert clean_pending(warehouse, source).files == 0


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"line_no": "one"}, {("line_no", "type")}),
        ({"line_no": "99999999999999999999"}, {("line_no", "type")}),
        ({"ordered_at": "2024-02-30 10:00"}, {("ordered_at", "type")}),
        ({"ordered_at": "now"}, {("ordered_at", "type")}),
        ({"ship_date": "2024-13-01"}, {("ship_date", "type")}),
        ({"unit_price": "NaN"}, {("unit_price", "type")}),
        ({"paid": "maybe"}, {("paid", "type")}),
        ({"region": None}, {("region", "required")}),
        ({"region": ""}, {("region", "required")}),
        ({"region": "west"}, {("region", "allowed_values")}),
        ({"quantity": "0"}, {("quantity", "min")}),
        ({"quantity": "101"}, {("quantity", "max")}),
        ({"unit_price": "-0.01"}, {("unit_price", "min")}),
        ({"order_id": "ORD-12"}, {("order_id", "pattern")}),
    ],
)
def test_each_rule_failing_alone_quarantines_the_row(
    warehouse: Warehouse, values: dict[str, str | None], expected: set[tuple[str, str]]
) -> None:
    source = make_source()
    file_id = land(warehouse, source, [row(order_id="ORD-0009"), row(**values)])

    report = clean_pending(warehouse, source)

    assert (report.clean_rows, report.quarantined_rows) == (1, 1)
    [entry] = quarantined(warehouse, source)
    assert failed_rules(entry) == expected
    assert entry["file_id"] == file_id and entry["line"] == 2
    for column, value in values.items():
        assert entry["raw_values"][column] == value
    assert all(f["message"] for f in entry["failures"])
    assert ledger_counts(warehouse, file_id) == (2, 1, 1, 0)
    assert_reconciles(warehouse, source)


def test_a_row_failing_several_rules_lists_every_one(warehouse: Warehouse) -> None:
    source = make_source()
    land(
        warehouse,
        source,
        [row(order_id="bad", region="west", quantity="x", ordered_at=None, paid="2")],
    )

    clean_pending(warehouse, source)

    [entry] = quarantined(warehouse, source)
    assert failed_rules(entry) == {
        ("order_id", "pattern"),
        ("region", "allowed_values"),
        ("quantity", "type"),
        ("ordered_at", "required"),
        ("paid", "type"),
    }
    assert_reconciles(warehouse, source)


def test_a_bad_value_in_a_large_clean_batch_only_quarantines_its_row(
    warehouse: Warehouse,
) -> None:
    # The optimistic unguarded cast fails on the whole statement; the guarded retry must keep
    # every other row and the same semantics.
    source = make_source()
    rows = [row(line_no=str(i)) for i in range(1, 51)]
    rows[30]["ordered_at"] = "31/12/2024"
    file_id = land(warehouse, source, rows)

    report = clean_pending(warehouse, source)

    assert (report.clean_rows, report.quarantined_rows) == (49, 1)
    assert quarantined(warehouse, source)[0]["line"] == 31
    assert ledger_counts(warehouse, file_id) == (50, 49, 1, 0)


def test_timestamps_with_and_without_offsets_and_across_daylight_saving(
    warehouse: Warehouse,
) -> None:
    source = make_source()
    values = {
        "1": "2024-03-31 01:30:00",  # Berlin winter time, UTC+1
        "2": "2024-03-31 03:30:00",  # after the spring-forward jump, UTC+2
        "3": "2024-10-27 01:30",  # before falling back, UTC+2
        "4": "2024-10-27T04:00:00",  # after falling back, UTC+1
        "5": "2024-03-31T12:00:00Z",  # offsets in the data win over the source's zone
        "6": "2024-03-31 12:00:00+05:30",
        "7": "2024-03-31 12:00:00.250-0300",
        "8": "2024-07-01",  # a date alone is local midnight
    }
    land(warehouse, source, [row(line_no=k, ordered_at=v) for k, v in values.items()])

    report = clean_pending(warehouse, source)

    assert report.quarantined_rows == 0
    got = {str(r["line_no"]): r["ordered_at"] for r in clean_rows(warehouse, source)}
    assert got == {
        "1": utc(2024, 3, 31, 0, 30),
        "2": utc(2024, 3, 31, 1, 30),
        "3": utc(2024, 10, 26, 23, 30),
        "4": utc(2024, 10, 27, 3, 0),
        "5": utc(2024, 3, 31, 12, 0),
        "6": utc(2024, 3, 31, 6, 30),
        "7": datetime(2024, 3, 31, 15, 0, 0, 250000, tzinfo=UTC),
        "8": utc(2024, 6, 30, 22, 0),
    }
    assert utc(2024, 3, 31, 6, 30) in slots(warehouse, source)


def test_decimal_comma_is_honoured(warehouse: Warehouse) -> None:
    source = make_source(reader=ReaderOptions(decimal_separator=","))
    land(warehouse, source, [row(unit_price="1234,56"), row(line_no="2", unit_price="1.5e2")])

    clean_pending(warehouse, source)

    prices = [r["unit_price"] for r in clean_rows(warehouse, source)]
    assert prices == [Decimal("1234.56"), Decimal("150")]


def test_duplicates_within_a_file_keep_the_last_line(warehouse: Warehouse) -> None:
    source = make_source()
    file_id = land(
        warehouse,
        source,
        [row(quantity="1"), row(quantity="2"), row(quantity="3"), row(line_no="2")],
    )

    report = clean_pending(warehouse, source)

    assert (report.clean_rows, report.replaced_rows) == (2, 2)
    rows = clean_rows(warehouse, source)
    assert [(r["line_no"], r["quantity"], r["_line"]) for r in rows] == [(1, 3, 3), (2, 2, 4)]
    assert ledger_counts(warehouse, file_id) == (4, 2, 0, 2)
    assert_reconciles(warehouse, source)


def test_duplicates_across_files_keep_the_newest_version(warehouse: Warehouse) -> None:
    source = make_source()
    first = land(warehouse, source, [row(quantity="1"), row(line_no="2", quantity="1")])
    clean_pending(warehouse, source)
    second = land(
        warehouse, source, [row(quantity="5", ordered_at="2024-06-01 09:00")], key="other.csv"
    )

    report = clean_pending(warehouse, source)

    assert (report.clean_rows, report.displaced_rows) == (1, 1)
    rows = clean_rows(warehouse, source)
    assert [(r["line_no"], r["quantity"], r["_file_id"]) for r in rows] == [
        (1, 5, second),
        (2, 1, first),
    ]
    # The older file's row moved from clean to replaced.
    assert ledger_counts(warehouse, first) == (2, 1, 0, 1)
    assert ledger_counts(warehouse, second) == (1, 1, 0, 0)
    # Both the old and the new event time of the replaced key are touched.
    assert slots(warehouse, source, second) == {utc(2024, 5, 1, 8, 0), utc(2024, 6, 1, 7, 0)}
    assert_reconciles(warehouse, source)


def test_an_older_version_cleaned_late_does_not_override_a_newer_one(
    warehouse: Warehouse,
) -> None:
    source = make_source()
    older = land(warehouse, source, [row(quantity="1")])
    newer = land(warehouse, source, [row(quantity="9")])
    # Both pending in one run, and also when cleaned one by one the newest wins.
    clean_pending(warehouse, source)

    [only] = clean_rows(warehouse, source)
    assert (only["quantity"], only["_file_id"]) == (9, newer)
    assert ledger_counts(warehouse, older) == (1, 0, 0, 1)
    assert_reconciles(warehouse, source)


def test_a_corrected_file_replaces_the_rows_of_its_previous_version(
    warehouse: Warehouse,
) -> None:
    source = make_source()
    old = land(
        warehouse,
        source,
        [
            row(quantity="1", ordered_at="2024-05-01 10:00"),
            row(line_no="2", ordered_at="2024-05-02 10:00"),
            row(line_no="3", region="west"),
        ],
    )
    clean_pending(warehouse, source)
    new = correct(
        warehouse,
        source,
        old,
        [row(quantity="7", ordered_at="2024-05-03 10:00"), row(line_no="4")],
    )

    report = clean_pending(warehouse, source)

    assert report.removed_rows == 2 and report.retired_files == (old,)
    rows = clean_rows(warehouse, source)
    assert [(r["line_no"], r["quantity"], r["_file_id"]) for r in rows] == [
        (1, 7, new),
        (4, 2, new),
    ]
    # Old version: nothing in clean any more, its quarantined row stays as history.
    assert ledger_counts(warehouse, old) == (3, 0, 1, 2)
    assert ledger_counts(warehouse, new) == (2, 2, 0, 0)
    # The slots of both versions are recorded for the correction.
    assert slots(warehouse, source, new) >= {
        utc(2024, 5, 1, 8, 0),
        utc(2024, 5, 2, 8, 0),
        utc(2024, 5, 3, 8, 0),
    }
    assert_reconciles(warehouse, source)


def test_extra_raw_columns_are_kept_in_quarantined_raw_values(warehouse: Warehouse) -> None:
    source = make_source()
    land(warehouse, source, [row(region="west", note="hello")], extra_columns=["note"])

    clean_pending(warehouse, source)

    [entry] = quarantined(warehouse, source)
    assert entry["raw_values"]["note"] == "hello"
