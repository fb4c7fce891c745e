"""Clean a CSV file while it is being loaded: the raw COPY's bytes, validated in polars, COPYed
into `clean.<source>` over a second connection at the same time.

Protocol with the loader (one file version, all on the loader's side of the run):
  `start()` once the raw columns are known; `wrap()` the raw COPY's input (see `RecordTee`);
  `end_of_input()` after the raw COPY; `finish()` before the raw commit; `commit()` after the
  raw transaction committed (raw first: a crash in between leaves the file loaded and not
  cleaned, which the SQL path picks up); `abort()` otherwise. Anything the fast path cannot do exactly (see `fast.Declined`), a key already in
  clean, or a key repeated across batches, leaves the file to the SQL path (`clean_pending`).

A correction (the version superseded an earlier one of its key) is never committed here: its
predecessor's rows must leave clean and the rows that predecessor had displaced from older
versions must win again (lib/clean/reinstate), which the SQL path does in the same run.
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
from analytics_pipelines.lib.clean import binary_copy
from analytics_pipelines.lib.clean import ledger as book
from analytics_pipelines.lib.clean.fast import Declined, FastValidator
from analytics_pipelines.lib.clean.schema import (
    add_primary_key,
    ensure_clean_table,
    live_columns,
)
from analytics_pipelines.lib.clean.zone_offsets import ZoneOffsets
from analytics_pipelines.lib.ingest.event_range import naive_text_range
from analytics_pipelines.lib.ingest.record_tee import RecordTee, UnclosedRecord, stray_quote
from analytics_pipelines.lib.ingest.streams import GeneratorReader
from analytics_pipelines.lib.logging import get_logger
from analytics_pipelines.lib.tables import CLEAN_SCHEMA, touched_periods
from analytics_pipelines.lib.warehouse import Warehouse, copy_from

log = get_logger(__name__)

QUARANTINE_COLUMNS = ["source", "file_id", "line", "raw_values", "failures"]


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


class FusedClean:
    """The clean half of one fused load (see the module docstring)."""

    def __init__(self, warehouse: Warehouse, source: SourceSpec) -> None:
        self.warehouse = warehouse
        self.source = source
        self.declined: str | None = None
        self.result = FusedResult()
        self._tee = RecordTee(source.reader.quote, self._run, f"clean-{source.name}")
        self._conn: Connection | None = None
        self._transaction: Any = None
        self._quarantine: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._validator: FastValidator | None = None

    # -- loader side -------------------------------------------------------------------------

    def start(
        self, *, file_id: int, received: list[str], raw_columns: list[str], first_line: int
    ) -> None:
        try:
            self._validator = FastValidator(
                self.source,
                file_id=file_id,
                received=received,
                raw_columns=raw_columns,
                first_line=first_line,
                zone=ZoneOffsets(self.warehouse.engine, self.source.timezone),
            )
        except Declined as declined:
            self._decline(str(declined))
            return
        self._tee.start()

    def wrap(self, body: IO[bytes]) -> IO[bytes]:
        """The raw COPY's input, handing every chunk to this cleaner as well."""
        return self._tee.wrap(body)

    def end_of_input(self) -> None:
        """The raw COPY has read the whole file: the clean side can finish its last batch."""
        self._tee.close()

    def finish(self, raw_rows: int) -> None:
        """Wait for the clean COPY and compare what both read (`raw_rows`: the raw COPY's)."""
        self._tee.close()
        self._tee.join()
        if self.declined is None and self.result.rows != raw_rows:
            self._decline(f"parsed {self.result.rows} rows, COPY read {raw_rows}")

    def business_dates(self) -> tuple[date | None, date | None] | None:
        """The loader's business-date range from the text this side parsed (after `finish`);
        None when only the SQL query can tell."""
        if self.declined is not None or self._validator is None:
            return None
        text = self._validator.raw_event_text
        return naive_text_range(text.low, text.high, text.zoned) if text.seen else None

    def commit(self, file_id: int) -> FusedResult | None:
        """After the raw commit: quarantine, touched slots, ledger, then commit clean."""
        if self.declined is not None or self._conn is None:
            self.abort()
            return None
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
        except Exception as error:  # raw is committed; the SQL path cleans it
            log.warning(
                "clean while loading failed at commit; the clean stage will clean the file",
                source=self.source.name,
                file_id=file_id,
                error=str(error).splitlines()[0] if str(error) else type(error).__name__,
            )
            self.abort()
            return None
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
        return result

    def abort(self) -> None:
        self._tee.stop()
        self._tee.join()
        if self._transaction is not None and self._transaction.is_active:
            self._transaction.rollback()
        self._close_connection()

    # -- clean side (thread) -----------------------------------------------------------------

    def _decline(self, reason: str) -> None:
        if self.declined is None:
            self.declined = reason
            log.info("clean while loading declined", source=self.source.name, reason=reason)
        self._tee.stopped.set()

    def _close_connection(self) -> None:
        self._quarantine.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self) -> None:
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
                raise Declined("earlier file versions wait for the SQL path")
            columns = self._validator.output_columns if self._validator else []
            copy_from(
                conn,
                (CLEAN_SCHEMA, self.source.name),
                columns,
                cast(IO[bytes], GeneratorReader(_ahead(self._clean_rows(), self._tee.stopped))),
                format="binary",
            )
            if created:
                # A key repeated across batches fails here, and the SQL path takes the file.
                add_primary_key(conn, self.source)
        except Declined as declined:
            self._decline(str(declined))
        except (sa.exc.DBAPIError, Exception) as error:  # the SQL path decides
            self._decline(f"{type(error).__name__}: {error}".splitlines()[0])
        finally:
            if self.declined is not None:
                self._tee.drain()

    def _clean_rows(self) -> Iterator[bytes | memoryview]:
        """The file's clean rows as one binary COPY stream, a batch at a time."""
        validator = self._validator
        assert validator is not None
        reader = self.source.reader
        result = self.result
        stray = stray_quote(reader.delimiter, reader.quote)
        quote = reader.quote.encode()
        # Python datetimes are costly to build: slots become them once, de-duplicated.
        slots = pl.Series("q", [], pl.Datetime("us"))
        yield binary_copy.HEADER
        for batch in _whole_records(self._tee):
            if quote in batch and stray.search(batch):
                # A quote inside an unquoted value: COPY and polars read it differently.
                raise Declined("a quote character inside an unquoted value")
            frame = pl.read_csv(
                io.BytesIO(batch),
                has_header=False,
                new_columns=validator.received,
                infer_schema=False,
                separator=reader.delimiter,
                quote_char=reader.quote,
                truncate_ragged_lines=False,
            )
            outcome = validator.validate(frame)
            result.rows += outcome.rows
            result.ok_rows += outcome.ok_rows
            result.failed_rows += outcome.failed_rows
            result.landed_rows += outcome.landed_rows
            slots = pl.concat([slots, outcome.slots.cast(pl.Datetime("us"))]).unique()
            result.first_date = _earliest(result.first_date, outcome.first_date)
            result.last_date = _latest(result.last_date, outcome.last_date)
            if outcome.quarantine.height:
                outcome.quarantine.write_csv(self._quarantine, include_header=False)
            try:
                yield binary_copy.encode_rows(outcome.good, validator.output_kinds)
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


def _whole_records(tee: RecordTee) -> Iterator[bytes]:
    try:
        yield from tee.batches()
    except UnclosedRecord as error:
        raise Declined(str(error)) from None


def _earliest(a: date | None, b: date | None) -> date | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: date | None, b: date | None) -> date | None:
    return b if a is None else a if b is None else max(a, b)
