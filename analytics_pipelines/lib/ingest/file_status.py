"""What became of each delivered file version: listings, failure alerts, health.

Read (and the alert mark written) through the ledger (`ingest.file_ledger`) with psycopg2 alone,
so `analytics-pipelines files` and `health` answer at once; callers inside Dagster pass the
connection under their SQLAlchemy one (`lib.warehouse.dbapi_connection`). Operator retries are in
`lib/ingest/file_retry.py`, the loader's own bookkeeping in `lib/ingest/ledger.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from psycopg2 import sql

from analytics_pipelines.lib.ingest.statuses import FAILED, STATUSES
from analytics_pipelines.lib.pg import DbApiConnection, execute, fetch_all

__all__ = [
    "STATUSES",
    "FileVersion",
    "failures_summary",
    "latest_failed_deliveries",
    "list_versions",
    "mark_alerted",
    "unalerted_failures",
    "version_by_id",
]

SHORT_ETAG = 8
# How many failed files a check's description names before it points to the full list.
SUMMARY_FILES = 3
LEDGER = sql.Identifier("ingest", "file_ledger")


@dataclass(frozen=True)
class FileVersion:
    """One ledger row as an operator reads it."""

    source: str
    key: str
    file_id: int
    etag: str
    status: str
    rows: int | None
    reason: str | None
    when: datetime
    run_id: str | None
    alerted_at: datetime | None
    retry_requested_at: datetime | None

    @property
    def version(self) -> str:
        """`#<file id> <short etag>`: the ledger's id of this version and which content it was."""
        return f"#{self.file_id} {self.etag[:SHORT_ETAG]}"

    def as_json(self) -> dict[str, Any]:
        """The fields by name, times in ISO 8601."""
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}


# Ledger column → FileVersion field, in the fields' order.
_FIELDS = {
    "source": "source",
    "object_key": "key",
    "file_id": "file_id",
    "etag": "etag",
    "status": "status",
    "row_count": "rows",
    "error": "reason",
    "discovered_at": "when",
    "run_id": "run_id",
    "alerted_at": "alerted_at",
    "retry_requested_at": "retry_requested_at",
}
COLUMNS = sql.SQL(", ").join(map(sql.Identifier, _FIELDS))


def version_of(row: Any) -> FileVersion:
    """A FileVersion from a row holding COLUMNS."""
    return FileVersion(**{field: getattr(row, column) for column, field in _FIELDS.items()})


def _versions(conn: DbApiConnection, statement: sql.Composable, params: Any) -> list[FileVersion]:
    return [version_of(row) for row in fetch_all(conn, statement, params)]


def list_versions(
    conn: DbApiConnection,
    *,
    source: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[FileVersion]:
    """File versions, newest first, optionally of one source and one status."""
    conditions = [sql.SQL("TRUE")]
    if source is not None:
        conditions.append(sql.SQL("source = %(source)s"))
    if status is not None:
        conditions.append(sql.SQL("status = %(status)s"))
    statement = sql.SQL(
        "SELECT {columns} FROM {ledger} WHERE {where} ORDER BY file_id DESC LIMIT %(limit)s"
    ).format(columns=COLUMNS, ledger=LEDGER, where=sql.SQL(" AND ").join(conditions))
    return _versions(conn, statement, {"source": source, "status": status, "limit": limit})


def version_by_id(conn: DbApiConnection, file_id: int) -> FileVersion | None:
    found = _versions(
        conn,
        sql.SQL("SELECT {} FROM {} WHERE file_id = %(file_id)s").format(COLUMNS, LEDGER),
        {"file_id": file_id},
    )
    return found[0] if found else None


# ---- failure alerts ------------------------------------------------------------------------------


def unalerted_failures(
    conn: DbApiConnection, sources: Iterable[str], limit: int
) -> list[FileVersion]:
    """Failed versions of these sources whose alert has not been sent yet, oldest first."""
    statement = sql.SQL(
        "SELECT {} FROM {} WHERE status = %(failed)s AND alerted_at IS NULL "
        "AND source = ANY(%(sources)s) ORDER BY file_id LIMIT %(limit)s"
    ).format(COLUMNS, LEDGER)
    return _versions(
        conn, statement, {"failed": FAILED, "sources": sorted(set(sources)), "limit": limit}
    )


def mark_alerted(conn: DbApiConnection, file_id: int) -> None:
    execute(
        conn,
        sql.SQL(
            "UPDATE {} SET alerted_at = now() WHERE file_id = %(file_id)s AND alerted_at IS NULL"
        ).format(LEDGER),
        {"file_id": file_id},
    )


# ---- health --------------------------------------------------------------------------------------


def latest_failed_deliveries(conn: DbApiConnection, sources: Iterable[str]) -> list[FileVersion]:
    """Per source, its newest ledger row when that row is a failure."""
    statement = sql.SQL(
        "SELECT * FROM (SELECT DISTINCT ON (source) {columns} FROM {ledger} "
        "WHERE source = ANY(%(sources)s) ORDER BY source, file_id DESC) AS newest "
        "WHERE status = %(failed)s ORDER BY source"
    ).format(columns=COLUMNS, ledger=LEDGER)
    return _versions(conn, statement, {"sources": sorted(set(sources)), "failed": FAILED})


# ---- the raw asset's check -----------------------------------------------------------------------


class FailedFile(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def error(self) -> str | None: ...


def failures_summary(failures: Sequence[FailedFile], source: str) -> str:
    """One readable line naming the failed files and why, e.g. for an asset check's description."""
    count = len(failures)
    named = "; ".join(
        f"{f.key} — {f.error or 'no reason recorded'}" for f in failures[:SUMMARY_FILES]
    )
    more = (
        f"; and {count - SUMMARY_FILES} more (`analytics-pipelines files {source} --status failed`)"
        if count > SUMMARY_FILES
        else ""
    )
    return f"{count} file{'s' if count != 1 else ''} failed: {named}{more}"
