"""The clean stage's bookkeeping in ingest.file_ledger: per file version, where its rows went.

For every file version `row_count = clean_rows + quarantined_rows + replaced_rows`; a row moves
between the counters of its own file only (clean → replaced when a newer row takes its key,
replaced → clean when the version that took it is superseded and the row wins again,
quarantined → clean when a replay lets it pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.tables import ledger


@dataclass(frozen=True)
class PendingFile:
    file_id: int
    row_count: int


def lock_source(conn: Connection, source: str, *, wait: bool = True) -> bool:
    """Serialise cleaners of one source (sensor runs, replays) for the transaction; without
    `wait`, False at once when another holds the lock."""
    lock = sa.func.pg_advisory_xact_lock if wait else sa.func.pg_try_advisory_xact_lock
    key = sa.func.hashtext(sa.literal(f"clean:{source}"))
    return conn.execute(sa.select(lock(key))).scalar() is not False


def pending_files(conn: Connection, source: str) -> list[PendingFile]:
    rows = conn.execute(
        sa.select(ledger.c.file_id, sa.func.coalesce(ledger.c.row_count, 0))
        .where(
            ledger.c.source == source,
            ledger.c.status == "loaded",
            ledger.c.cleaned_at.is_(None),
        )
        .order_by(ledger.c.file_id)
    )
    return [PendingFile(int(r[0]), int(r[1])) for r in rows]


def superseded_to_retire(conn: Connection, source: str) -> dict[int, tuple[int | None, int]]:
    """Superseded versions whose rows may still be in clean: file id → (correction, clean rows)."""
    rows = conn.execute(
        sa.select(
            ledger.c.file_id, ledger.c.superseded_by, sa.func.coalesce(ledger.c.clean_rows, 0)
        ).where(
            ledger.c.source == source,
            ledger.c.status == "superseded",
            sa.or_(ledger.c.cleaned_at.is_(None), ledger.c.clean_rows > 0),
        )
    )
    return {int(r[0]): (None if r[1] is None else int(r[1]), int(r[2])) for r in rows}


def versions_with_replaced_rows(conn: Connection, source: str) -> list[int]:
    """Current, cleaned versions with rows not in clean though they passed: displaced rows."""
    return [
        int(file_id)
        for file_id in conn.execute(
            sa.select(ledger.c.file_id)
            .where(
                ledger.c.source == source,
                ledger.c.status == "loaded",
                ledger.c.cleaned_at.is_not(None),
                ledger.c.replaced_rows > 0,
            )
            .order_by(ledger.c.file_id)
        ).scalars()
    ]


def retire(conn: Connection, file_ids: list[int]) -> None:
    """A superseded version keeps nothing in clean: its remaining rows count as replaced."""
    if not file_ids:
        return
    conn.execute(
        sa.update(ledger)
        .where(ledger.c.file_id.in_(file_ids))
        .values(
            clean_rows=0,
            quarantined_rows=sa.func.coalesce(ledger.c.quarantined_rows, 0),
            replaced_rows=sa.func.coalesce(ledger.c.row_count, 0)
            - sa.func.coalesce(ledger.c.quarantined_rows, 0),
            cleaned_at=sa.func.coalesce(ledger.c.cleaned_at, sa.func.now()),
            updated_at=sa.func.now(),
        )
    )


def record_cleaned(
    conn: Connection,
    file_id: int,
    *,
    clean_rows: int,
    quarantined_rows: int,
    replaced_rows: int,
    first_date: date | None,
    last_date: date | None,
) -> None:
    conn.execute(
        sa.update(ledger)
        .where(ledger.c.file_id == file_id)
        .values(
            clean_rows=clean_rows,
            quarantined_rows=quarantined_rows,
            replaced_rows=replaced_rows,
            business_date_min=sa.func.coalesce(ledger.c.business_date_min, first_date),
            business_date_max=sa.func.coalesce(ledger.c.business_date_max, last_date),
            cleaned_at=sa.func.now(),
            updated_at=sa.func.now(),
        )
    )


def shift(
    conn: Connection, file_id: int, *, clean: int = 0, quarantined: int = 0, replaced: int = 0
) -> None:
    """Move rows between the counters of one file version."""
    conn.execute(
        sa.update(ledger)
        .where(ledger.c.file_id == file_id)
        .values(
            clean_rows=sa.func.coalesce(ledger.c.clean_rows, 0) + clean,
            quarantined_rows=sa.func.coalesce(ledger.c.quarantined_rows, 0) + quarantined,
            replaced_rows=sa.func.coalesce(ledger.c.replaced_rows, 0) + replaced,
            updated_at=sa.func.now(),
        )
    )
