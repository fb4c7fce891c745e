"""Ingestion: object versions from the landing area into `raw.<source>`, recorded in the ledger."""

from analytics_pipelines.lib.ingest.errors import FileRejected, KeysRefused
from analytics_pipelines.lib.ingest.ledger import DUPLICATE, FAILED, LOADED, SUPERSEDED
from analytics_pipelines.lib.ingest.loader import (
    FileOutcome,
    LoadReport,
    load_object,
    load_pending,
)
from analytics_pipelines.lib.ingest.raw_tables import ensure_raw_table, preview_rows

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
