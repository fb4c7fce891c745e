"""Runs a `clean_seam.CleanBesideLoad` beside one raw COPY: the loader's side of the seam.

The COPY's input is teed (`record_tee`) to a worker thread that hands it to the clean side in
whole records; after the COPY the worker is joined and the business dates come from what the
clean side read. Which versions go this way: CSV-shaped bodies in UTF-8 whose line numbers are
counted (not carried in the body, as converted Excel rows carry theirs).
"""

from __future__ import annotations

from datetime import date
from typing import IO

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest.clean_seam import CleanBesideLoad
from analytics_pipelines.lib.ingest.event_range import naive_text_range
from analytics_pipelines.lib.ingest.event_text import EventDates
from analytics_pipelines.lib.ingest.readers import CopyPlan
from analytics_pipelines.lib.ingest.record_tee import RecordTee


def applies(plan: CopyPlan) -> bool:
    return (
        plan.kind == "csv"
        and not plan.line_in_body
        and plan.options.get("ENCODING", "UTF8") == "UTF8"
    )


class BesideCopy:
    """One file version's clean side, fed from its raw COPY."""

    def __init__(self, clean: CleanBesideLoad, source: SourceSpec) -> None:
        self.clean = clean
        self.source = source
        self._tee: RecordTee | None = None

    def start(
        self,
        plan: CopyPlan,
        *,
        file_id: int,
        received: list[str],
        raw_columns: list[str],
        correction: bool,
    ) -> IO[bytes]:
        """The COPY's body, handed to the clean side as well (unchanged if it declines).
        A correction is the clean stage's after the COPY: only its dates are read here."""
        if correction:
            self.clean.abort()
            self.clean = EventDates(None, self.source)
        delimiter = str(plan.options.get("DELIMITER", ","))
        quote = str(plan.options.get("QUOTE", '"'))
        started = self.clean.start(
            file_id=file_id,
            received=received,
            raw_columns=raw_columns,
            first_line=plan.first_line,
            delimiter=delimiter,
            quote=quote,
        )
        if not started:
            return plan.body
        tee = RecordTee(delimiter, quote, lambda: self._work(tee), f"beside-{self.source.name}")
        self._tee = tee
        tee.start()
        return tee.wrap(plan.body)

    def _work(self, tee: RecordTee) -> None:
        try:
            self.clean.consume(tee.batches())
        finally:
            # Ended early (declined): the COPY no longer waits to hand over its chunks.
            tee.stopped.set()

    def end_of_input(self) -> None:
        """The COPY has read the whole file: the clean side can finish its last batch."""
        if self._tee is not None:
            self._tee.close()

    def business_dates(self, raw_rows: int) -> tuple[date | None, date | None] | None:
        """After the COPY: the business-date range from the text the clean side read; None
        when only the SQL query can tell."""
        if self._tee is None:
            return None
        self._tee.close()
        self._tee.join()
        text = self.clean.finish(raw_rows)
        if text is None or not text.seen:
            return None
        return naive_text_range(text.low, text.high, text.zoned)

    def commit(self, file_id: int) -> bool:
        return self._tee is not None and self.clean.commit(file_id)

    def abort(self) -> None:
        if self._tee is not None:
            self._tee.stop()
            self._tee.join()
        self.clean.abort()
