"""What became of each delivered file version: listings, operator retries, failure alerts, health.

Read and written through the ledger (`ingest.file_ledger`); the loader's own bookkeeping stays in
`lib/ingest/ledger.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.ingest.ledger import (
    DUPLICATE,
    FAILED,
    LOADED,
    LOADING,
    SUPERSEDED,
    current_versions,
)
from analytics_pipelines.lib.tables import ledger

STATUSES = (LOADED, FAILED, DUPLICATE, SUPERSEDED, LOADING)
SHORT_ETAG = 8
# How many failed files a check's description names before it points to the full list.
SUMMARY_FILES = 3


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
        return {
            "source": self.source,
            "key": self.key,
            "file_id": self.file_id,
            "etag": self.etag,
            "status": self.status,
            "rows": self.rows,
            "reason": self.reason,
            "when": self.when.isoformat(),
            "run_id": self.run_id,
            "alerted_at": self.alerted_at.isoformat() if self.alerted_at else None,
            "retry_requested_at": self.retry_requested_at.isoformat()
            if self.retry_requested_at
            else None,
        }


_COLUMNS = (
    ledger.c.source,
    ledger.c.object_key,
    ledger.c.file_id,
    ledger.c.etag,
    ledger.c.status,
    ledger.c.row_count,
    ledger.c.error,
    ledger.c.discovered_at,
    ledger.c.run_id,
    ledger.c.alerted_at,
    ledger.c.retry_requested_at,
)


def _version(row: Any) -> FileVersion:
    return FileVersion(
        source=row.source,
        key=row.object_key,
        file_id=int(row.file_id),
        etag=row.etag,
        status=row.status,
        rows=None if row.row_count is None else int(row.row_count),
        reason=row.error,
        when=row.discovered_at,
        run_id=row.run_id,
        alerted_at=row.alerted_at,
        retry_requested_at=row.retry_requested_at,
    )


def list_versions(
    conn: Connection, *, source: str | None = None, status: str | None = None, limit: int = 50
) -> list[FileVersion]:
    """File versions, newest first, optionally of one source and one status."""
    query = sa.select(*_COLUMNS).order_by(ledger.c.file_id.desc()).limit(limit)
    if source is not None:
        query = query.where(ledger.c.source == source)
    if status is not None:
        query = query.where(ledger.c.status == status)
    return [_version(row) for row in conn.execute(query)]


def version_by_id(conn: Connection, file_id: int) -> FileVersion | None:
    row = conn.execute(sa.select(*_COLUMNS).where(ledger.c.file_id == file_id)).one_or_none()
    return None if row is None else _version(row)


# ---- failure alerts ------------------------------------------------------------------------------


def unalerted_failures(conn: Connection, sources: Iterable[str], limit: int) -> list[FileVersion]:
    """Failed versions of these sources whose alert has not been sent yet, oldest first."""
    return [
        _version(row)
        for row in conn.execute(
            sa.select(*_COLUMNS)
            .where(
                ledger.c.status == FAILED,
                ledger.c.alerted_at.is_(None),
                ledger.c.source.in_(sorted(set(sources))),
            )
            .order_by(ledger.c.file_id)
            .limit(limit)
        )
    ]


def mark_alerted(conn: Connection, file_id: int) -> None:
    conn.execute(
        sa.update(ledger)
        .where(ledger.c.file_id == file_id, ledger.c.alerted_at.is_(None))
        .values(alerted_at=sa.func.now())
    )


# ---- health --------------------------------------------------------------------------------------


def latest_failed_deliveries(conn: Connection, sources: Iterable[str]) -> list[FileVersion]:
    """Per source, its newest ledger row when that row is a failure."""
    newest = (
        sa.select(*_COLUMNS)
        .ext(distinct_on(ledger.c.source))
        .where(ledger.c.source.in_(sorted(set(sources))))
        .order_by(ledger.c.source, ledger.c.file_id.desc())
        .subquery()
    )
    rows = conn.execute(
        sa.select(newest).where(newest.c.status == FAILED).order_by(newest.c.source)
    )
    return [_version(row) for row in rows]


# ---- operator retries ----------------------------------------------------------------------------


class RetryRefused(Exception):
    """The named version cannot be retried; the message says why."""


@dataclass
class RetryResult:
    marked: list[FileVersion] = field(default_factory=list)
    already_requested: list[FileVersion] = field(default_factory=list)


def _current_failed(conn: Connection, source: str) -> list[FileVersion]:
    newest = (
        sa.select(*_COLUMNS)
        .ext(distinct_on(ledger.c.object_key))
        .where(ledger.c.source == source)
        .order_by(ledger.c.object_key, ledger.c.file_id.desc())
        .subquery()
    )
    rows = conn.execute(
        sa.select(newest).where(newest.c.status == FAILED).order_by(newest.c.file_id)
    )
    return [_version(row) for row in rows]


def _retry_target_by_key(conn: Connection, source: str, key: str) -> FileVersion:
    current = current_versions(conn, source, [key]).get(key)
    if current is None:
        raise RetryRefused(f"{source} has no delivery of {key!r} in the ledger")
    target = version_by_id(conn, current.file_id)
    assert target is not None
    if target.status != FAILED:
        raise RetryRefused(
            f"the current version of {key} ({target.version}) is {target.status}, not failed:"
            " nothing to retry"
        )
    return target


def _retry_target_by_id(conn: Connection, source: str, file_id: int) -> FileVersion:
    target = version_by_id(conn, file_id)
    if target is None or target.source != source:
        raise RetryRefused(f"file id {file_id} is not a version of {source}")
    if target.status != FAILED:
        raise RetryRefused(
            f"file {file_id} ({target.key}) is {target.status}, not failed: nothing to retry"
        )
    current = current_versions(conn, source, [target.key])[target.key]
    if current.file_id != file_id:
        raise RetryRefused(
            f"file {file_id} is not the current version of {target.key} (file {current.file_id} is)"
        )
    return target


def request_retry(
    conn: Connection,
    source: str,
    *,
    key: str | None = None,
    file_id: int | None = None,
    all_failed: bool = False,
) -> RetryResult:
    """Mark failed versions for a new attempt (`retry_requested_at`); the landing sensor then
    treats them as new. Exactly one of `key`, `file_id`, `all_failed` names what to retry."""
    if [key is not None, file_id is not None, all_failed].count(True) != 1:
        raise ValueError("name exactly one of key, file_id, all_failed")
    if key is not None:
        targets = [_retry_target_by_key(conn, source, key)]
    elif file_id is not None:
        targets = [_retry_target_by_id(conn, source, file_id)]
    else:
        targets = _current_failed(conn, source)
    result = RetryResult()
    result.already_requested = [t for t in targets if t.retry_requested_at is not None]
    wanted = [t.file_id for t in targets if t.retry_requested_at is None]
    if wanted:
        marked = conn.execute(
            sa.update(ledger)
            .where(
                ledger.c.file_id.in_(wanted),
                ledger.c.status == FAILED,
                ledger.c.retry_requested_at.is_(None),
            )
            .values(retry_requested_at=sa.func.now())
            .returning(*_COLUMNS)
        )
        result.marked = sorted((_version(row) for row in marked), key=lambda v: v.file_id)
    return result


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
