"""A raw load's business dates, read beside the COPY, are the ones PostgreSQL's query gives."""

from __future__ import annotations

import io
from typing import Any

import pytest
import sqlalchemy as sa

from analytics_pipelines.lib.ingest import load_pending, record_tee
from analytics_pipelines.lib.ingest.event_range import event_date_range, naive_text_range
from analytics_pipelines.lib.ingest.event_text import EventDates
from analytics_pipelines.lib.ingest.record_tee import RecordTee
from analytics_pipelines.lib.storage import ObjectStore
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_ingest_helpers import key_of, ledger_rows, make_source

HEADER = "order_id,ordered_at,region,amount\n"

CASES = {
    # Plain naive times: the text shortcut, read beside the COPY.
    "plain": (
        ["A1,2024-03-01 10:00:00,n,1", "A2,2024-03-05T23:59:59,s,2"],
        "2024-03-01/2024-03-05",
    ),
    # 23:30 at -05:00 is the next day in Berlin although its text sorts below the latest.
    "zoned among plain": (
        [
            "A1,2024-03-01 10:00:00,n,1",
            "A2,2024-03-09 23:30:00-05:00,s,2",
            "A3,2024-03-09 23:45:00,s,3",
        ],
        "2024-03-01/2024-03-10",
    ),
    # Text that is no date does not count; quoted values and a value over two lines do.
    "garbage and quotes": (
        [
            'A1,"2024-03-02 08:00:00","n, e",1',
            "A2,not a date,s,2",
            'A3,2024-03-03 09:00,"two\nlines",3',
        ],
        "2024-03-02/2024-03-03",
    ),
    # A quote inside an unquoted value: COPY and polars disagree, so PostgreSQL decides.
    "stray quote": (
        ['A1,2024-03-04 10:00:00,no"r"th,1', "A2,2024-03-06 10:00:00,s,2"],
        "2024-03-04/2024-03-06",
    ),
    "spaces": (
        ["A1,  2024-03-07 10:00:00,n,1", "A2,2024-03-08 10:00:00 ,s,2"],
        "2024-03-07/2024-03-08",
    ),
}


@pytest.mark.parametrize("batch_bytes", [record_tee.BATCH_BYTES, 40])
@pytest.mark.parametrize("case", list(CASES))
def test_raw_load_records_the_business_dates_the_sql_query_gives(
    store: ObjectStore,
    warehouse: Warehouse,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    batch_bytes: int,
) -> None:
    monkeypatch.setattr(record_tee, "BATCH_BYTES", batch_bytes)
    lines, expected = CASES[case]
    source = make_source()
    store.write(key_of(source, "a.csv"), (HEADER + "\n".join(lines) + "\n").encode())

    [outcome] = load_pending(source, store, warehouse).outcomes

    assert outcome.status == "loaded"
    [entry] = ledger_rows(warehouse, source)
    recorded = f"{entry['business_date_min']}/{entry['business_date_max']}"
    assert recorded == expected
    with warehouse.begin() as conn:
        conn.execute(sa.select(sa.func.set_config("TimeZone", source.timezone, True)))
        low, high = event_date_range(
            conn, source, outcome.file_id or 0, ["order_id", "ordered_at", "region", "amount"]
        )
    assert f"{low}/{high}" == recorded


def _read(body: bytes, copy_rows: int) -> tuple[EventDates, tuple[Any, ...] | None]:
    """Read `body` as the load does beside a COPY that read `copy_rows` rows."""
    reader = EventDates(None, make_source())
    received = ["order_id", "ordered_at", "region", "amount"]
    assert reader.start(
        file_id=1, received=received, raw_columns=received, first_line=2, delimiter=",", quote='"'
    )
    reader.consume(iter([body]))
    text = reader.finish(copy_rows)
    return reader, None if text is None else naive_text_range(text.low, text.high, text.zoned)


def test_the_reader_gives_the_range_only_when_it_read_what_the_copy_read() -> None:
    body = b"A1,2024-03-01 10:00:00,n,1\nA2,2024-03-05 11:00:00,s,2\n"
    _, dates = _read(body, 2)
    assert [str(d) for d in dates or ()] == ["2024-03-01", "2024-03-05"]
    disagreeing, dates = _read(body, 3)
    assert dates is None
    assert disagreeing.failed == "read 2 rows, COPY read 3"


def test_a_stopped_tee_does_not_hold_up_the_copy() -> None:
    tee = RecordTee(",", '"', lambda: None, "dates")
    tee.stop()
    # Feeding after the stop returns at once; the COPY's input is untouched.
    body = b"A1,2024-03-01 10:00:00,n,1\n" * 10_000
    assert tee.wrap(io.BytesIO(body)).read() == body


def test_plain_event_times_need_no_second_pass_over_raw(
    store: ObjectStore, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    from analytics_pipelines.lib.ingest import loader

    def no_query(*_: object) -> None:
        raise AssertionError("the business dates were queried from raw")

    monkeypatch.setattr(loader, "event_date_range", no_query)
    lines, expected = CASES["plain"]
    source = make_source()
    store.write(key_of(source, "a.csv"), (HEADER + "\n".join(lines) + "\n").encode())

    [outcome] = load_pending(source, store, warehouse).outcomes

    assert outcome.status == "loaded"
    assert f"{outcome.business_date_min}/{outcome.business_date_max}" == expected
