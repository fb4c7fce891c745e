"""Data-quality measurements of a clean table, used by the asset checks and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean.schema import live_columns
from analytics_pipelines.lib.tables import (
    CLEAN_SCHEMA,
    FILE_ID,
    clean_table,
    ledger,
    quarantine_rows,
)
from analytics_pipelines.lib.warehouse import Warehouse


@dataclass(frozen=True)
class Reconciliation:
    files: int
    raw_rows: int
    clean_rows: int
    quarantined_rows: int
    replaced_rows: int
    problems: list[str]


def reconcile(warehouse: Warehouse, source: SourceSpec) -> Reconciliation:
    """Per file version: raw = clean + quarantined + replaced, and the counters match the rows
    actually present in clean and in quarantine.

    Every current version is covered (loaded ones, and duplicates, which hold no rows): a
    loaded version not cleaned yet is a problem, since its rows are in neither place. Superseded
    versions are covered once cleaned (their rows count as replaced, their quarantine stays).
    """
    with warehouse.connect() as conn:
        if live_columns(conn, CLEAN_SCHEMA, source.name) is None:
            return Reconciliation(0, 0, 0, 0, 0, [])
        clean = clean_table(source)
        in_clean = (
            sa.select(clean.c[FILE_ID].label("file_id"), sa.func.count().label("n"))
            .group_by(clean.c[FILE_ID])
            .subquery("in_clean")
        )
        in_quarantine = (
            sa.select(quarantine_rows.c.file_id, sa.func.count().label("n"))
            .where(quarantine_rows.c.source == source.name)
            .group_by(quarantine_rows.c.file_id)
            .subquery("in_quarantine")
        )
        rows = conn.execute(
            sa.select(
                ledger.c.file_id,
                ledger.c.object_key,
                sa.func.coalesce(ledger.c.row_count, 0),
                sa.func.coalesce(ledger.c.clean_rows, 0),
                sa.func.coalesce(ledger.c.quarantined_rows, 0),
                sa.func.coalesce(ledger.c.replaced_rows, 0),
                sa.func.coalesce(in_clean.c.n, 0),
                sa.func.coalesce(in_quarantine.c.n, 0),
                # Cleaned, or a duplicate: it has no rows of its own to clean.
                sa.or_(ledger.c.cleaned_at.is_not(None), ledger.c.status == "duplicate"),
            )
            .select_from(
                ledger.outerjoin(in_clean, in_clean.c.file_id == ledger.c.file_id).outerjoin(
                    in_quarantine, in_quarantine.c.file_id == ledger.c.file_id
                )
            )
            .where(
                ledger.c.source == source.name,
                sa.or_(
                    ledger.c.status.in_(["loaded", "duplicate"]),
                    sa.and_(ledger.c.status == "superseded", ledger.c.cleaned_at.is_not(None)),
                ),
            )
            .order_by(ledger.c.file_id)
        ).all()
        orphans = conn.execute(
            sa.select(sa.func.count())
            .select_from(in_clean)
            .where(
                ~sa.exists().where(
                    ledger.c.file_id == in_clean.c.file_id, ledger.c.source == source.name
                )
            )
        ).scalar_one()
    problems: list[str] = []
    totals = [0, 0, 0, 0]
    for file_id, key, raw, cln, qua, rep, actual_clean, actual_quarantine, settled in rows:
        where = f"file {file_id} ({key})"
        if not settled:
            problems.append(
                f"{where}: loaded but not cleaned yet: its {raw} raw rows are in neither"
                f" clean.{source.name} nor quarantine"
            )
        elif raw != cln + qua + rep:
            problems.append(
                f"{where}: {raw} raw rows but {cln} clean + {qua} quarantined + {rep} replaced"
            )
        if cln != actual_clean:
            problems.append(f"{where}: ledger says {cln} clean rows, clean holds {actual_clean}")
        if qua != actual_quarantine:
            problems.append(
                f"{where}: ledger says {qua} quarantined rows, quarantine holds {actual_quarantine}"
            )
        for i, value in enumerate((raw, cln, qua, rep)):
            totals[i] += value
    if orphans:
        problems.append(f"{orphans} file id(s) in clean.{source.name} are not in the ledger")
    raw, cln, qua, rep = totals
    return Reconciliation(len(rows), raw, cln, qua, rep, problems)


def reconciliation_problems(warehouse: Warehouse, source: SourceSpec) -> list[str]:
    return reconcile(warehouse, source).problems


def duplicate_keys(warehouse: Warehouse, source: SourceSpec) -> tuple[int, int]:
    """(primary keys held by more than one clean row, rows with an empty key column)."""
    with warehouse.connect() as conn:
        if live_columns(conn, CLEAN_SCHEMA, source.name) is None:
            return (0, 0)
        clean = clean_table(source)
        key = [clean.c[k] for k in source.primary_key]
        duplicated = sa.select(*key).group_by(*key).having(sa.func.count() > 1).subquery()
        dupes = conn.execute(sa.select(sa.func.count()).select_from(duplicated)).scalar_one()
        empty = conn.execute(
            sa.select(sa.func.count()).where(sa.or_(*(k.is_(None) for k in key)))
        ).scalar_one()
    return int(dupes), int(empty)


@dataclass(frozen=True)
class QuarantineRate:
    rows: int
    quarantined: int
    file_ids: list[int]

    @property
    def rate(self) -> float:
        return self.quarantined / self.rows if self.rows else 0.0


def latest_quarantine_rate(warehouse: Warehouse, source: SourceSpec) -> QuarantineRate:
    """Quarantined share of the rows of the file versions cleaned by the latest clean run."""
    latest = (
        sa.select(sa.func.max(ledger.c.cleaned_at))
        .where(ledger.c.source == source.name, ledger.c.status == "loaded")
        .scalar_subquery()
    )
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.select(
                ledger.c.file_id,
                sa.func.coalesce(ledger.c.row_count, 0),
                sa.func.coalesce(ledger.c.quarantined_rows, 0),
            ).where(
                ledger.c.source == source.name,
                ledger.c.status == "loaded",
                ledger.c.cleaned_at == latest,
            )
        ).all()
    return QuarantineRate(
        rows=sum(int(r[1]) for r in rows),
        quarantined=sum(int(r[2]) for r in rows),
        file_ids=sorted(int(r[0]) for r in rows),
    )
