"""Clean a new file version beside its raw COPY: the COPY's bytes, checked by the rule engine,
typed in polars and COPYed in binary into `clean.<source>` over a second connection.

Implements `lib.ingest.clean_seam.CleanBesideLoad` (structurally: nothing is imported from
ingest). Anything that cannot be done exactly here (see `typed_rows.Declined`), a key already
in clean, a key repeated across batches or earlier versions waiting, leaves the version to
the clean stage after the COPY (`clean_pending`), which applies the same rules.
"""

from __future__ import annotations

import io
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean import ledger as book
from analytics_pipelines.lib.clean.binary_clean import binary_rows, copy_binary, record_landed
from analytics_pipelines.lib.clean.rules import (
    NORMALISED,
    WALL,
    Checked,
    RuleEngine,
    UnsupportedPattern,
)
from analytics_pipelines.lib.clean.schema import add_primary_key, ensure_clean_table, live_columns
from analytics_pipelines.lib.clean.typed_rows import Declined, Landed, TypedRows
from analytics_pipelines.lib.clean.zone_offsets import ZoneOffsets
from analytics_pipelines.lib.event_time_text import RawEventText
from analytics_pipelines.lib.logging import get_logger
from analytics_pipelines.lib.tables import CLEAN_SCHEMA, FILE_ID, LINE
from analytics_pipelines.lib.warehouse import Warehouse

log = get_logger(__name__)


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
        self.result = Landed()
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
        result = self.result
        try:
            record_landed(conn, self.source, file_id, result, self._quarantine)
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
            if not book.lock_source(conn, self.source.name, wait=False):
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
            rows = binary_rows(
                self._file.rules,
                self._file.typed,
                self._frames(batches),
                self.result,
                self._quarantine,
                self._seen,
            )
            copy_binary(conn, self.source, self._file.typed, _stoppable(rows, self._stop))
            if created:
                # A key repeated across batches fails here, and the clean stage takes the file.
                add_primary_key(conn, self.source)
        except Exception as error:  # the clean stage decides after the COPY
            self._decline(
                str(error)
                if isinstance(error, Declined)
                else f"{type(error).__name__}: {error}".splitlines()[0]
            )

    def _frames(self, batches: Iterator[bytes]) -> Iterator[pl.DataFrame]:
        """The COPY's records as frames of text with file id and line."""
        file = self._file
        assert file is not None
        rows = 0
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
                (pl.int_range(pl.len(), dtype=pl.Int64) + file.first_line + rows).alias(LINE),
            )
            rows += frame.height
            yield frame

    def _seen(self, checked: Checked) -> None:
        """Fold a checked batch's event times into the business-date summary."""
        staged = checked.staged
        event = self.source.event_column
        # The event times that round-trip through the plain wall format carry no zone.
        plain = (
            pl.col(WALL).is_not_null() & (pl.col(event) == pl.col(f"{NORMALISED}{event}"))
            if WALL in staged.columns
            else None
        )
        self.raw_event_text.add(staged, event, plain)


def _stoppable(
    rows: Iterator[bytes | memoryview], stop: threading.Event
) -> Iterator[bytes | memoryview]:
    """`rows` until the load gives up (`abort`)."""
    for chunk in rows:
        if stop.is_set():
            raise Declined("the load gave up")
        yield chunk
