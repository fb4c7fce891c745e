"""Checked rows typed and COPYed in binary straight into `clean.<source>`, then recorded.

The fast way into clean, shared by both ways of cleaning a version: beside its raw COPY
(`fused`) and after it into a clean table holding no rows yet (`clean_into_empty`: a
first clean, a rebuild, the correction of everything in clean). Every row is decided by the
rule engine; `typed_rows` types the passing ones exactly or declines (`Declined`), and then
the version takes the staged way (`stage` and `merge`), with the same rules.
"""

from __future__ import annotations

import io
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, cast

import polars as pl
import psycopg2
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.chunk_reader import ChunkReader
from analytics_pipelines.lib.clean import binary_copy
from analytics_pipelines.lib.clean import ledger as book
from analytics_pipelines.lib.clean.rules import QUARANTINE_COLUMNS, Checked, RuleEngine
from analytics_pipelines.lib.clean.schema import add_primary_key
from analytics_pipelines.lib.clean.stage import RawInput, batches_of, spooled_rows
from analytics_pipelines.lib.clean.typed_rows import Declined, Landed, TypedRows
from analytics_pipelines.lib.clean.zone_offsets import ZoneOffsets
from analytics_pipelines.lib.tables import CLEAN_SCHEMA, FILE_ID, clean_table, touched_periods
from analytics_pipelines.lib.warehouse import Warehouse, copy_from


def binary_rows(
    rules: RuleEngine,
    typed: TypedRows,
    frames: Iterable[pl.DataFrame],
    result: Landed,
    quarantine: IO[bytes],
    seen: Callable[[Checked], None] | None = None,
) -> Iterator[bytes | memoryview]:
    """The passing rows of `frames` (one file version) as one binary COPY stream; counts,
    dates and slots go to `result`, failing rows to `quarantine` as CSV. `seen` gets each
    checked batch."""
    yield binary_copy.HEADER
    for frame in frames:
        checked = rules.check(frame)
        if seen is not None:
            seen(checked)
        good, batch = typed.land(checked)
        result.add(batch)
        if checked.bad_rows:
            checked.quarantine.write_csv(quarantine, include_header=False)
        try:
            yield binary_copy.encode_rows(good, typed.output_kinds)
        except binary_copy.Unencodable as error:
            raise Declined(str(error)) from None
    yield binary_copy.TRAILER


def copy_binary(
    conn: Connection, source: SourceSpec, typed: TypedRows, rows: Iterator[bytes | memoryview]
) -> None:
    """COPY a binary stream into clean, encoded one batch ahead in a thread."""
    copy_from(
        conn,
        (CLEAN_SCHEMA, source.name),
        typed.output_columns,
        cast(IO[bytes], ChunkReader(ahead(rows))),
        format="binary",
    )


def record_landed(
    conn: Connection,
    source: SourceSpec,
    file_id: int,
    result: Landed,
    quarantine: IO[bytes],
    *,
    ledger: bool = True,
) -> None:
    """Quarantine, touched slots and (unless the caller does) the ledger's counters of one
    version that landed."""
    quarantine.seek(0)
    copy_from(conn, ("quarantine", "rows"), QUARANTINE_COLUMNS, quarantine)
    if result.slots.len():
        # A year of data touches ~35,000 slots: COPY, not one bound parameter each.
        slots = pl.DataFrame({"slot_start": result.slots.sort()}).select(
            source=pl.lit(source.name),
            file_id=pl.lit(file_id, pl.Int64),
            slot_start=pl.col("slot_start").dt.strftime("%Y-%m-%d %H:%M:%S+00"),
        )
        copy_from(
            conn,
            (str(touched_periods.schema), touched_periods.name),
            slots.columns,
            io.BytesIO(slots.write_csv(include_header=False).encode()),
        )
    if not ledger:
        return
    book.record_cleaned(
        conn,
        file_id,
        clean_rows=result.landed_rows,
        quarantined_rows=result.failed_rows,
        replaced_rows=result.replaced_rows,
        first_date=result.first_date,
        last_date=result.last_date,
    )


def clean_into_empty(
    conn: Connection,
    warehouse: Warehouse,
    source: SourceSpec,
    rows: RawInput,
    file_ids: list[int],
    *,
    add_key: bool,
) -> dict[int, Landed] | None:
    """Clean the versions `file_ids` (raw rows `rows`) into a clean table holding no rows,
    version by version, by binary COPY, then build its primary key if `add_key`; quarantine
    and slots are recorded, the ledger is the caller's. None (nothing changed) when the staged
    way must do it: a value `typed_rows` declines, or a key repeated across batches or
    versions (the primary key refuses it)."""
    if (
        source.event_time is None
        or conn.execute(sa.select(sa.exists().select_from(clean_table(source)))).scalar_one()
    ):
        return None
    savepoint = conn.begin_nested()
    landed: dict[int, Landed] = {}
    try:
        rules = RuleEngine(source, rows.text_columns)
        typed = TypedRows(source, ZoneOffsets(warehouse.engine, source.timezone))
        for file_id in sorted(file_ids):
            version = RawInput(
                rows.relation, rows.text_columns, rows.relation.c[FILE_ID] == file_id
            )
            result = Landed()
            with spooled_rows(conn, version) as spool, tempfile.TemporaryFile() as quarantine:
                frames = batches_of(spool, version) if spool is not None else iter(())
                copy_binary(
                    conn, source, typed, binary_rows(rules, typed, frames, result, quarantine)
                )
                record_landed(conn, source, file_id, result, quarantine, ledger=False)
            landed[file_id] = result
        if add_key:
            add_primary_key(conn, source)
    except (Declined, psycopg2.Error, sa.exc.DBAPIError):
        savepoint.rollback()
        return None
    savepoint.commit()
    return landed


def ahead(chunks: Iterator[bytes | memoryview], depth: int = 2) -> Iterator[bytes | memoryview]:
    """`chunks` computed in a worker thread, up to `depth` items ahead: polars validates the
    next batch while PostgreSQL ingests this one. A consumer that stops early waits for at
    most `depth` items in progress."""
    with ThreadPoolExecutor(1, thread_name_prefix="clean-validate") as pool:
        queued = deque(pool.submit(next, chunks, None) for _ in range(depth))
        while (chunk := queued.popleft().result()) is not None:
            queued.append(pool.submit(next, chunks, None))
            yield chunk
