"""The one seam between ingest and clean: what the raw loader hands the clean stage.

`lib/ingest` loads file versions into `raw.<source>` and knows nothing of validation;
`lib/clean` decides every row (one rule engine, `lib/clean/rules`). They meet only here, and
`lib/clean` needs nothing from this module (the protocol is structural):

* **After the COPY** nothing crosses: the clean stage reads the raw rows of the versions the
  ledger lists as loaded and not cleaned (`clean_pending`) — JSON lines, Excel, corrections,
  non-UTF-8 files, and whatever could not be cleaned beside the COPY.
* **Beside the COPY**, for a new CSV-shaped version (CSV, Parquet converted to CSV): the
  loader's caller passes a factory of `CleanBesideLoad` (the Dagster raw asset passes
  `lib.clean.FusedClean` when its run also materialises the clean asset). The loader hands it
  the COPY's bytes as whole CSV records while PostgreSQL reads them.

`CleanBesideLoad`, in the order the loader calls it for one file version:

1. `start(...)` once the raw columns are known; False declines the file up front.
2. `consume(batches)` runs in a worker thread beside the raw COPY: `batches` yields the
   COPY's input in whole records (UTF-8 CSV in the given dialect, line numbers counted from
   `first_line`); it raises when the bytes cannot be read as COPY reads them. Returning early
   (or on an error) declines the file; the COPY is never held up.
3. `finish(raw_rows)` after the raw COPY (`raw_rows`: what COPY read): the business-date
   text summary of every raw row the clean side read, or None when only SQL can tell.
4. `commit(file_id)` after the raw transaction committed: True when the version is now in
   clean (raw first: a crash in between leaves it loaded, not cleaned, for the clean stage).
5. `abort()` always, last: gives up whatever is not committed.

A correction (the version superseded an earlier one) is never committed beside the COPY:
the clean stage retires its predecessor's rows and reinstates what they had displaced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.event_time_text import RawEventText
from analytics_pipelines.lib.warehouse import Warehouse


class CleanBesideLoad(Protocol):
    """The clean half of one file version loaded with cleaning beside its COPY."""

    def start(
        self,
        *,
        file_id: int,
        received: list[str],
        raw_columns: list[str],
        first_line: int,
        delimiter: str,
        quote: str,
    ) -> bool: ...

    def consume(self, batches: Iterator[bytes]) -> None: ...

    def finish(self, raw_rows: int) -> RawEventText | None: ...

    def commit(self, file_id: int) -> bool: ...

    def abort(self) -> None: ...


CleanBesideLoadFactory = Callable[[Warehouse, SourceSpec], CleanBesideLoad]
