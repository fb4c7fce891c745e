"""A CSV file's business-date range read beside its raw COPY, from the same bytes.

The loader needs each file's business-date range. Asking PostgreSQL afterwards means a second
pass over every new raw row; polars reading only the event-time column of the bytes the COPY
is reading costs a fraction of that on the core the COPY leaves idle. The result is the text
shortcut of `event_range` (min and max text, zone flag); whenever it cannot tell, or the two
readers disagree on the row count, the loader asks PostgreSQL as before.
"""

from __future__ import annotations

import io
from datetime import date
from typing import IO

import polars as pl

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.event_time_text import RawEventText
from analytics_pipelines.lib.ingest.event_range import naive_text_range
from analytics_pipelines.lib.ingest.record_tee import RecordTee
from analytics_pipelines.lib.logging import get_logger

log = get_logger(__name__)


class EventTextReader:
    """Reads the event-time text of one CSV file version while the raw COPY reads the file."""

    def __init__(self, source: SourceSpec, received: list[str]) -> None:
        self.source = source
        self.position = received.index(source.event_column)
        self.text = RawEventText()
        self.rows = 0
        self.failed: str | None = None
        self._tee = RecordTee(
            source.reader.delimiter, source.reader.quote, self._run, f"dates-{source.name}"
        )
        self._tee.start()

    @staticmethod
    def applies(source: SourceSpec, received: list[str]) -> bool:
        """Whether polars can read this file's event times as the COPY does."""
        return (
            source.format == "csv"
            and source.reader.encoding in ("utf-8", "utf-8-sig")
            and source.event_time in received
        )

    def wrap(self, body: IO[bytes]) -> IO[bytes]:
        return self._tee.wrap(body)

    def dates(self, raw_rows: int) -> tuple[date | None, date | None] | None:
        """After the COPY (`raw_rows`: what it read): the business-date range, or None when
        only PostgreSQL can tell."""
        self._tee.close()
        self._tee.join()
        if self.failed is None and self.rows != raw_rows:
            self.failed = f"read {self.rows} rows, COPY read {raw_rows}"
        if self.failed is not None:
            log.info("business dates left to SQL", source=self.source.name, reason=self.failed)
            return None
        text = self.text
        return naive_text_range(text.low, text.high, text.zoned) if text.seen else None

    def abort(self) -> None:
        self._tee.stop()
        self._tee.join()

    def _run(self) -> None:
        reader = self.source.reader
        name = self.source.event_column
        try:
            for batch in self._tee.batches():
                column = pl.read_csv(
                    io.BytesIO(batch),
                    has_header=False,
                    columns=[self.position],
                    infer_schema=False,
                    separator=reader.delimiter,
                    quote_char=reader.quote,
                ).to_series()
                self.rows += column.len()
                self.text.add(column.alias(name).to_frame(), name)
        except Exception as error:  # the SQL query decides instead
            self.failed = str(error).splitlines()[0] if str(error) else type(error).__name__
            self._tee.stopped.set()
            self._tee.drain()
