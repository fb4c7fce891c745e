"""The file ledger: one row per object version, the memory that makes loading exactly-once."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.storage import ObjectInfo
from analytics_pipelines.lib.tables import ledger

LOADED = "loaded"
DUPLICATE = "duplicate"
FAILED = "failed"
SUPERSEDED = "superseded"
LOADING = "loading"

_MD5 = re.compile(r"^[0-9a-f]{32}$")


def etag_is_md5(etag: str) -> bool:
    """Simple (non-multipart) uploads have the content's MD5 as etag on S3 and the local store."""
    return bool(_MD5.match(etag))


def known_versions(conn: Connection, source: str, keys: Iterable[str]) -> set[tuple[str, str]]:
    """(key, etag) pairs of these keys the ledger already holds, whatever their status."""
    keys = list(keys)
    if not keys:
        return set()
    rows = conn.execute(
        sa.select(ledger.c.object_key, ledger.c.etag).where(
            ledger.c.source == source, ledger.c.object_key.in_(keys)
        )
    )
    return {(r.object_key, r.etag) for r in rows}


def loaded_with_content(conn: Connection, source: str, content_hash: str) -> int | None:
    """The loaded version of this source with this content, if any."""
    return conn.execute(
        sa.select(ledger.c.file_id)
        .where(
            ledger.c.source == source,
            ledger.c.content_hash == content_hash,
            ledger.c.status == LOADED,
        )
        .order_by(ledger.c.file_id)
        .limit(1)
    ).scalar()


def insert_version(
    conn: Connection,
    source: str,
    info: ObjectInfo,
    *,
    status: str,
    run_id: str | None,
    **values: Any,
) -> int:
    file_id = conn.execute(
        sa.insert(ledger)
        .values(
            source=source,
            object_key=info.key,
            etag=info.etag,
            size_bytes=info.size,
            modified_at=info.modified,
            status=status,
            run_id=run_id,
            updated_at=sa.func.now(),
            **values,
        )
        .returning(ledger.c.file_id)
    ).scalar_one()
    return int(file_id)


def update_version(conn: Connection, file_id: int, **values: Any) -> None:
    conn.execute(
        sa.update(ledger)
        .where(ledger.c.file_id == file_id)
        .values(updated_at=sa.func.now(), **values)
    )


def earlier_versions(conn: Connection, source: str, key: str, file_id: int) -> list[Any]:
    """Versions of the same key that a new version replaces (loaded, duplicate or failed)."""
    return list(
        conn.execute(
            sa.select(ledger.c.file_id, ledger.c.status, ledger.c.row_count).where(
                ledger.c.source == source,
                ledger.c.object_key == key,
                ledger.c.file_id != file_id,
                ledger.c.status.in_((LOADED, DUPLICATE, FAILED)),
            )
        )
    )


def live_duplicates_of(conn: Connection, file_id: int, key: str) -> list[Any]:
    """Current duplicates of `file_id` under other keys: their objects still hold that content."""
    return list(
        conn.execute(
            sa.select(ledger.c.file_id, ledger.c.object_key)
            .where(
                ledger.c.duplicate_of == file_id,
                ledger.c.status == DUPLICATE,
                ledger.c.object_key != key,
            )
            .order_by(ledger.c.file_id)
        )
    )


def version(conn: Connection, file_id: int) -> Any:
    return conn.execute(sa.select(ledger).where(ledger.c.file_id == file_id)).one()


def business_dates(values: tuple[Any, Any] | None) -> dict[str, date | None]:
    low, high = values if values else (None, None)
    return {"business_date_min": low, "business_date_max": high}
