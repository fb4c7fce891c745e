"""The file ledger: one row per object version, the memory that makes loading exactly-once."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.ingest.statuses import DUPLICATE, FAILED, LOADED
from analytics_pipelines.lib.storage import ObjectInfo
from analytics_pipelines.lib.tables import ledger

_MD5 = re.compile(r"^[0-9a-f]{32}$")


def etag_is_md5(etag: str) -> bool:
    """Simple (non-multipart) uploads have the content's MD5 as etag on S3 and the local store."""
    return bool(_MD5.match(etag))


@dataclass(frozen=True)
class CurrentVersion:
    """The newest ledger row of a key: what the landing prefix held when it was last read."""

    key: str
    file_id: int
    etag: str
    status: str
    retry_requested: bool

    def settles(self, etag: str) -> bool:
        """True when an object with this etag needs no new attempt.

        Only the newest version of a key counts: content that goes back to an older version
        (A, then B, then A again) is a new delivery, and a failed version is tried again when
        an operator asked for it.
        """
        return self.etag == etag and not (self.status == FAILED and self.retry_requested)

    @property
    def marker(self) -> str:
        """Changes whenever the key's ledger state does (part of the sensors' run keys)."""
        return f"{self.file_id}{'r' if self.retry_requested else ''}"


def current_versions(
    conn: Connection, source: str, keys: Iterable[str]
) -> dict[str, CurrentVersion]:
    """The newest ledger row of each of these keys that the ledger knows."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    rows = conn.execute(
        sa.select(
            ledger.c.object_key,
            ledger.c.file_id,
            ledger.c.etag,
            ledger.c.status,
            ledger.c.retry_requested_at,
        )
        .ext(distinct_on(ledger.c.object_key))
        .where(ledger.c.source == source, ledger.c.object_key.in_(keys))
        .order_by(ledger.c.object_key, ledger.c.file_id.desc())
    )
    return {
        r.object_key: CurrentVersion(
            r.object_key, int(r.file_id), r.etag, r.status, r.retry_requested_at is not None
        )
        for r in rows
    }


def known_versions(conn: Connection, source: str, keys: Iterable[str]) -> set[tuple[str, str]]:
    """(key, etag) pairs that need no new attempt: each the current version of its key."""
    return {
        (key, current.etag)
        for key, current in current_versions(conn, source, keys).items()
        if current.settles(current.etag)
    }


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
