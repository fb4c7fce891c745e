"""Ingestion: object versions from the landing area into `raw.<source>`, recorded in the ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING

from analytics_pipelines.lib.ingest.errors import FileRejected, KeysRefused
from analytics_pipelines.lib.lazy import lazy_names

if TYPE_CHECKING:
    from analytics_pipelines.lib.ingest.loader import (
        FileOutcome,
        LoadReport,
        load_object,
        load_pending,
    )
    from analytics_pipelines.lib.ingest.raw_tables import ensure_raw_table, preview_rows
    from analytics_pipelines.lib.ingest.statuses import DUPLICATE, FAILED, LOADED, SUPERSEDED

# The loader pulls in polars and pyarrow (the readers beside the COPY): it is imported when one
# of its names is first used, so `lib.ingest.file_status` (the CLI's `files`, `health`) stays light.
_LAZY = {
    "DUPLICATE": "statuses",
    "FAILED": "statuses",
    "LOADED": "statuses",
    "SUPERSEDED": "statuses",
    "FileOutcome": "loader",
    "LoadReport": "loader",
    "load_object": "loader",
    "load_pending": "loader",
    "preview_rows": "raw_tables",
    "ensure_raw_table": "raw_tables",
}


__getattr__ = lazy_names(__name__, _LAZY)


__all__ = [
    "DUPLICATE",
    "FAILED",
    "LOADED",
    "SUPERSEDED",
    "FileOutcome",
    "FileRejected",
    "KeysRefused",
    "LoadReport",
    "ensure_raw_table",
    "load_object",
    "load_pending",
    "preview_rows",
]
