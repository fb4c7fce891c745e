"""The statuses of a file version in the ledger (`ingest.file_ledger.status`)."""

from __future__ import annotations

LOADED = "loaded"
DUPLICATE = "duplicate"
FAILED = "failed"
SUPERSEDED = "superseded"
LOADING = "loading"

STATUSES = (LOADED, FAILED, DUPLICATE, SUPERSEDED, LOADING)
