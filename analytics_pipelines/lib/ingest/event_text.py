"""A CSV file's business-date range read beside its raw COPY, from the same bytes.

The loader needs each file's business-date range. Asking PostgreSQL afterwards means a second
pass over every new raw row; polars reading only the event-time column of the bytes the COPY
is reading costs a fraction of that on the core the COPY leaves idle. `EventDates` is the
seam's `CleanBesideLoad` of a load without cleaning (the clean side reads the same text when
it runs): it only summarises the event-time text (`event_range`'s shortcut) and cleans
nothing. Whenever it cannot tell, or it read another row count than COPY, the loader asks
PostgreSQL as before.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import polars as pl

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.event_time_text import RawEventText
from analytics_pipelines.lib.logging import get_logger
from analytics_pipelines.lib.warehouse import Warehouse

log = get_logger(__name__)


class EventDates:
    """Reads the event-time text of one CSV-shaped version while the raw COPY reads it."""

    def __init__(self, warehouse: Warehouse | None, source: SourceSpec) -> None:
        self.source = source
        self.text = RawEventText()
        self.rows = 0
        self.failed: str | None = None
        self._position = 0
        self._dialect = (",", '"')

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
        if self.source.event_time not in received:
            return False
        self._position = received.index(self.source.event_column)
        self._dialect = (delimiter, quote)
        return True

    def consume(self, batches: Iterator[bytes]) -> None:
        name = self.source.event_column
        try:
            for batch in batches:
                column = pl.read_csv(
                    io.BytesIO(batch),
                    has_header=False,
                    columns=[self._position],
                    infer_schema=False,
                    separator=self._dialect[0],
                    quote_char=self._dialect[1],
                ).to_series()
                self.rows += column.len()
                self.text.add(column.alias(name).to_frame(), name)
        except Exception as error:  # the SQL query decides instead
            self.failed = str(error).splitlines()[0] if str(error) else type(error).__name__

    def finish(self, raw_rows: int) -> RawEventText | None:
        if self.failed is None and self.rows != raw_rows:
            self.failed = f"read {self.rows} rows, COPY read {raw_rows}"
        if self.failed is not None:
            log.info("business dates left to SQL", source=self.source.name, reason=self.failed)
            return None
        return self.text

    def commit(self, file_id: int) -> bool:
        return False

    def abort(self) -> None:
        return None
