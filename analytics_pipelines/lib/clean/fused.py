"""Clean a new file version beside its raw COPY: the COPY's bytes, checked by the rule engine,
typed in polars and COPYed in binary into `clean.<source>` over a second connection.

Implements `lib.ingest.clean_seam.CleanBesideLoad` (structurally: nothing is imported from
ingest). Anything that cannot be done exactly here (see `typed_rows.Declined`), a key already
in clean, a key repeated across batches or earlier versions waiting, leaves the version to
the clean stage after the COPY (`clean_pending`), which applies the same rules.
"""

from __future__ import annotations

import contextlib
import io
import queue
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any, cast

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.chunk_reader import ChunkReader
from analytics_pipelines.lib.clean import binary_copy
from analytics_pipelines.lib.clean import ledger as book
from analytics_pipelines.lib.clean.rules import (
    NORMALISED,
    QUARANTINE_COLUMNS,
    WALL,
    RuleEngine,
    UnsupportedPattern,
)
from analytics_pipelines.lib.clean.schema import add_primary_key, ensure_clean_table, live_columns
from analytics_pipelines.lib.clean.typed_rows import Declined, TypedRows
from analytics_pipelines.lib.clean.zone_offsets import ZoneOffsets
from analytics_pipelines.lib.event_time_text import RawEventText
from analytics_pipelines.lib.logging import get_logger
from analytics_pipelines.lib.tables import CLEAN_SCHEMA, FILE_ID, LINE, touched_periods
from analytics_pipelines.lib.warehouse import Warehouse, copy_from

log = get_logger(__name__)


@dataclass
class FusedResult:
    rows: int = 0
    ok_rows: int = 0
    failed_rows: int = 0
    landed_rows: int = 0
    # Distinct 15-minute slots (naive, in UTC) of the landed rows' event times.
    slots: pl.Series = field(default_factory=lambda: pl.Series("q", [], pl.Datetime("us")))
    first_date: date | None = None
    last_date: date | None = None

    @property
    def replaced_rows(self) -> int:
        return self.ok_rows - self.landed_rows


@dataclass
class _File:
    file_id: int
    received: list[str]
    first_line: int
    delimiter: str
    quote: str
    rules: RuleEngine
    typed: TypedRows


class FusedClean:
    """The clean half of one fused load (see the module docstring)."""

    def __init__(self, warehouse: Warehouse, source: SourceSpec) -> None:
        self.warehouse = warehouse
        self.source = source
        self.declined: str | None = None
        self.result = FusedResult()
        self.raw_event_text = RawEventText()
        self._file: _File | None = None
        self._stop = threading.Event()
        self._conn: Connection | None = None
        self._transaction: Any = None
        self._quarantine: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115

    # -- loader side -------------------------------------------------------------------------

    def start(
        self,
        *,
        file_id: int,
        received: list[str],
        raw_columns: list[str],
        first_line: int,
        delimiter: str,
        quote: str,
    ) -> bool:
        try:
            self._file = _File(
                file_id,
                received,
                first_line,
                delimiter,
                quote,
                RuleEngine(self.source, raw_columns),
                TypedRows(self.source, ZoneOffsets(self.warehouse.engine, self.source.timezone)),
            )
        except (Declined, UnsupportedPattern) as declined:
            self._decline(str(declined))
            return False
        return True

    def finish(self, raw_rows: int) -> RawEventText | None:
        """After the raw COPY (the worker has ended): what this side read of the event times,
        None when it did not read every row."""
        if self.declined is None and self.result.rows != raw_rows:
            self._decline(f"parsed {self.result.rows} rows, COPY read {raw_rows}")
        return self.raw_event_text if self.declined is None else None

    def commit(self, file_id: int) -> bool:
        """After the raw commit: quarantine, touched slots, ledger, then commit clean."""
        if self.declined is not None or self._conn is None:
            self.abort()
            return False
        conn = self._conn
        try:
            self._quarantine.seek(0)
            copy_from(conn, ("quarantine", "rows"), QUARANTINE_COLUMNS, self._quarantine)
            result = self.result
            if result.slots.len():
                # A year of data touches ~35,000 slots: COPY, not one bound parameter each.
                slots = pl.DataFrame({"slot_start": result.slots.sort()}).select(
                    source=pl.lit(self.source.name),
                    file_id=pl.lit(file_id, pl.Int64),
                    slot_start=pl.col("slot_start").dt.strftime("%Y-%m-%d %H:%M:%S+00"),
                )
                copy_from(
                    conn,
                    (str(touched_periods.schema), touched_periods.name),
                    slots.columns,
                    io.BytesIO(slots.write_csv(include_header=False).encode()),
                )
            book.record_cleaned(
                conn,
                file_id,
                clean_rows=result.landed_rows,
                quarantined_rows=result.failed_rows,
                replaced_rows=result.replaced_rows,
                first_date=result.first_date,
                last_date=result.last_date,
            )
            self._transaction.commit()
        except Exception as error:  # raw is committed; the clean stage cleans it
            log.warning(
                "clean while loading failed at commit; the clean stage will clean the file",
                source=self.source.name,
                file_id=file_id,
                error=str(error).splitlines()[0] if str(error) else type(error).__name__,
            )
            self.abort()
            return False
        finally:
            self._close_connection()
        log.info(
            "cleaned while loading",
            source=self.source.name,
            file_id=file_id,
            clean_rows=result.landed_rows,
            quarantined_rows=result.failed_rows,
            replaced_rows=result.replaced_rows,
        )
        return True

    def abort(self) -> None:
        self._stop.set()
        if self._transaction is not None and self._transaction.is_active:
            self._transaction.rollback()
        self._close_connection()

    # -- clean side (the loader's worker thread) ---------------------------------------------

    def _decline(self, reason: str) -> None:
        if self.declined is None:
            self.declined = reason
            log.info("clean while loading declined", source=self.source.name, reason=reason)
        self._stop.set()

    def _close_connection(self) -> None:
        self._quarantine.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def consume(self, batches: Iterator[bytes]) -> None:
        """Validate and COPY the file's records as they come (the worker thread's work)."""
        try:
            conn = self.warehouse.engine.connect()
            self._conn = conn
            self._transaction = conn.begin()
            got = conn.execute(
                sa.select(
                    sa.func.pg_try_advisory_xact_lock(
                        sa.func.hashtext(sa.literal(f"clean:{self.source.name}"))
                    )
                )
            ).scalar_one()
            if not got:
                raise Declined("another clean of the source is running")
            conn.execute(sa.select(sa.func.set_config("TimeZone", self.source.timezone, True)))
            # Binary text fields are read in the client encoding; ours are UTF-8.
            conn.execute(sa.select(sa.func.set_config("client_encoding", "UTF8", True)))
            created = live_columns(conn, CLEAN_SCHEMA, self.source.name) is None
            ensure_clean_table(conn, self.source, defer_primary_key=created)
            if book.pending_files(conn, self.source.name) or book.superseded_to_retire(
                conn, self.source.name
            ):
                raise Declined("earlier file versions wait for the clean stage")
            assert self._file is not None
            copy_from(
                conn,
                (CLEAN_SCHEMA, self.source.name),
                self._file.typed.output_columns,
                cast(IO[bytes], ChunkReader(_ahead(self._clean_rows(batches), self._stop))),
                format="binary",
            )
            if created:
                # A key repeated across batches fails here, and the clean stage takes the file.
                add_primary_key(conn, self.source)
        except Exception as error:  # the clean stage decides after the COPY
            self._decline(
                str(error)
                if isinstance(error, Declined)
                else f"{type(error).__name__}: {error}".splitlines()[0]
            )

    def _clean_rows(self, batches: Iterator[bytes]) -> Iterator[bytes | memoryview]:
        """The file's clean rows as one binary COPY stream, a batch at a time."""
        file = self._file
        assert file is not None
        result = self.result
        event = self.source.event_column
        # Python datetimes are costly to build: slots become them once, de-duplicated.
        slots = pl.Series("q", [], pl.Datetime("us"))
        yield binary_copy.HEADER
        for batch in batches:
            frame = pl.read_csv(
                io.BytesIO(batch),
                has_header=False,
                new_columns=file.received,
                infer_schema=False,
                separator=file.delimiter,
                quote_char=file.quote,
                truncate_ragged_lines=False,
            ).with_columns(
                pl.lit(file.file_id, pl.Int64).alias(FILE_ID),
                (pl.int_range(pl.len(), dtype=pl.Int64) + file.first_line + result.rows).alias(
                    LINE
                ),
            )
            checked = file.rules.check(frame)
            staged = checked.staged
            # The event times that round-trip through the plain wall format carry no zone.
            plain = (
                pl.col(WALL).is_not_null() & (pl.col(event) == pl.col(f"{NORMALISED}{event}"))
                if WALL in staged.columns
                else None
            )
            self.raw_event_text.add(staged, event, plain)
            outcome = file.typed.land(checked)
            result.rows += frame.height
            result.ok_rows += outcome.ok_rows
            result.failed_rows += checked.bad_rows
            result.landed_rows += outcome.landed_rows
            slots = pl.concat([slots, outcome.slots.cast(pl.Datetime("us"))]).unique()
            result.first_date = _earliest(result.first_date, outcome.first_date)
            result.last_date = _latest(result.last_date, outcome.last_date)
            if checked.bad_rows:
                checked.quarantine.write_csv(self._quarantine, include_header=False)
            try:
                yield binary_copy.encode_rows(outcome.good, file.typed.output_kinds)
            except binary_copy.Unencodable as error:
                raise Declined(str(error)) from None
        yield binary_copy.TRAILER
        result.slots = slots


def _ahead(
    chunks: Iterator[bytes | memoryview], stop: threading.Event, depth: int = 2
) -> Iterator[bytes | memoryview]:
    """Run `chunks` in its own thread, `depth` items ahead: polars validates the next batch
    while PostgreSQL ingests this one. `stop` is set when the consumer gives up early."""
    out: queue.Queue[tuple[bytes | memoryview | None, BaseException | None]] = queue.Queue(depth)
    finished = False

    def put(item: tuple[bytes | memoryview | None, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put((chunk, None)):
                    return
        except BaseException as error:  # handed to the consumer, which re-raises it
            put((None, error))
            return
        put((None, None))

    worker = threading.Thread(target=produce, name="clean-validate", daemon=True)
    worker.start()
    try:
        while True:
            try:
                chunk, error = out.get(timeout=0.2)
            except queue.Empty:
                if worker.is_alive() or not out.empty():
                    continue
                raise Declined("stopped before the end of the file") from None
            if error is not None:
                raise error
            if chunk is None:
                finished = True
                return
            yield chunk
    finally:
        # The consumer may stop early (COPY failed): unblock the producer and let it end.
        if not finished:
            stop.set()
        while worker.is_alive():
            with contextlib.suppress(queue.Empty):
                out.get(timeout=0.1)


def _earliest(a: date | None, b: date | None) -> date | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: date | None, b: date | None) -> date | None:
    return b if a is None else a if b is None else max(a, b)
