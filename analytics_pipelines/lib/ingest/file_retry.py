"""Operator retries: mark failed file versions so the landing sensor loads them again.

`analytics-pipelines files retry` runs these in one transaction; the versions are read with the
queries of `lib/ingest/file_status.py` on the same connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg2 import sql
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.ingest.file_status import (
    COLUMNS,
    LEDGER,
    FileVersion,
    version_by_id,
    version_of,
)
from analytics_pipelines.lib.ingest.ledger import current_versions
from analytics_pipelines.lib.ingest.statuses import FAILED
from analytics_pipelines.lib.pg import fetch_all
from analytics_pipelines.lib.warehouse import dbapi_connection


class RetryRefused(Exception):
    """The named version cannot be retried; the message says why."""


@dataclass
class RetryResult:
    marked: list[FileVersion] = field(default_factory=list)
    already_requested: list[FileVersion] = field(default_factory=list)


def _current_failed(conn: Connection, source: str) -> list[FileVersion]:
    statement = sql.SQL(
        "SELECT * FROM (SELECT DISTINCT ON (object_key) {columns} FROM {ledger} "
        "WHERE source = %(source)s ORDER BY object_key, file_id DESC) AS newest "
        "WHERE status = %(failed)s ORDER BY file_id"
    ).format(columns=COLUMNS, ledger=LEDGER)
    rows = fetch_all(dbapi_connection(conn), statement, {"source": source, "failed": FAILED})
    return [version_of(row) for row in rows]


def _retry_target_by_key(conn: Connection, source: str, key: str) -> FileVersion:
    current = current_versions(conn, source, [key]).get(key)
    if current is None:
        raise RetryRefused(f"{source} has no delivery of {key!r} in the ledger")
    target = version_by_id(dbapi_connection(conn), current.file_id)
    assert target is not None
    if target.status != FAILED:
        raise RetryRefused(
            f"the current version of {key} ({target.version}) is {target.status}, not failed:"
            " nothing to retry"
        )
    return target


def _retry_target_by_id(conn: Connection, source: str, file_id: int) -> FileVersion:
    target = version_by_id(dbapi_connection(conn), file_id)
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
        statement = sql.SQL(
            "UPDATE {ledger} SET retry_requested_at = now() WHERE file_id = ANY(%(wanted)s) "
            "AND status = %(failed)s AND retry_requested_at IS NULL RETURNING {columns}"
        ).format(ledger=LEDGER, columns=COLUMNS)
        marked = fetch_all(dbapi_connection(conn), statement, {"wanted": wanted, "failed": FAILED})
        result.marked = sorted((version_of(row) for row in marked), key=lambda v: v.file_id)
    return result
