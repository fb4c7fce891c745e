"""Operate on the quarantine: reasons with counts, replay after a catalog fix, rebuild a clean table."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean import ledger as book
from analytics_pipelines.lib.clean.merge import merge_stage, stage_counts
from analytics_pipelines.lib.clean.process import WORK_MEM, CleanReport, clean_pending, set_local
from analytics_pipelines.lib.clean.reference_changes import LookupUses, ReferenceSnapshot
from analytics_pipelines.lib.clean.schema import drop_clean_table, ensure_clean_table
from analytics_pipelines.lib.clean.stage import FAILURES, OK, RawInput, build_stage
from analytics_pipelines.lib.logging import get_logger
from analytics_pipelines.lib.tables import FILE_ID, LINE, ledger, quarantine_rows
from analytics_pipelines.lib.warehouse import Warehouse

log = get_logger(__name__)
REPLAY_INPUT = "_replay_input"


@dataclass(frozen=True)
class Reason:
    column: str
    rule: str
    message: str
    rows: int


@dataclass(frozen=True)
class QuarantineSummary:
    source: str
    rows: int
    reasons: list[Reason]


def _live_quarantine(source: SourceSpec) -> sa.ColumnElement[bool]:
    """Quarantined rows of file versions still in force (a superseded version's are history)."""
    return sa.and_(
        quarantine_rows.c.source == source.name,
        sa.exists().where(
            ledger.c.file_id == quarantine_rows.c.file_id, ledger.c.status == "loaded"
        ),
    )


def quarantine_summary(warehouse: Warehouse, source: SourceSpec) -> QuarantineSummary:
    """Why rows of `source` are in quarantine: one entry per (column, rule) with its row count."""
    failure = sa.func.jsonb_array_elements(
        sa.cast(quarantine_rows.c.failures, sa.dialects.postgresql.JSONB)
    ).table_valued("value")
    column = failure.c.value.op("->>")("column")
    rule = failure.c.value.op("->>")("rule")
    with warehouse.connect() as conn:
        total = conn.execute(
            sa.select(sa.func.count()).select_from(quarantine_rows).where(_live_quarantine(source))
        ).scalar_one()
        rows = conn.execute(
            sa.select(
                column,
                rule,
                sa.func.min(failure.c.value.op("->>")("message")),
                sa.func.count(),
            )
            .select_from(quarantine_rows.join(failure, sa.true()))
            .where(_live_quarantine(source))
            .group_by(column, rule)
            .order_by(sa.func.count().desc(), column, rule)
        ).all()
    return QuarantineSummary(
        source.name, int(total), [Reason(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]
    )


@dataclass(frozen=True)
class ReplayReport:
    source: str
    examined: int
    released: int
    landed: int
    replaced: int
    still_quarantined: int


def _replay_input(source: SourceSpec) -> sa.Subquery:
    """The live quarantined rows' raw values of the catalog's columns, as raw-shaped text."""
    values = sa.cast(quarantine_rows.c.raw_values, sa.dialects.postgresql.JSONB)
    return (
        sa.select(
            *(values.op("->>")(c.name).label(c.name) for c in source.columns),
            quarantine_rows.c.file_id.label(FILE_ID),
            quarantine_rows.c.line.label(LINE),
        )
        .where(_live_quarantine(source))
        .subquery(REPLAY_INPUT)
    )


def replay_quarantine(
    warehouse: Warehouse, source: SourceSpec, lookups: LookupUses = ()
) -> ReplayReport:
    """Validate the quarantined rows of `source` again with the current catalog.

    Rows that now pass leave quarantine for clean (under the usual newest-version-wins rule);
    rows that still fail stay, with their failures re-evaluated.
    """
    with warehouse.begin() as conn:
        book.lock_source(conn, source.name)
        set_local(conn, "work_mem", WORK_MEM)
        set_local(conn, "TimeZone", source.timezone)
        ensure_clean_table(conn, source)
        snapshot = ReferenceSnapshot.take(conn, source, lookups)
        rows = RawInput(_replay_input(source), [c.name for c in source.columns])
        stage = build_stage(conn, source, rows)
        counts = stage_counts(conn, source, stage)
        same_row = sa.and_(
            quarantine_rows.c.source == source.name,
            quarantine_rows.c.file_id == stage.c[FILE_ID],
            quarantine_rows.c.line == stage.c[LINE],
        )
        conn.execute(
            sa.update(quarantine_rows)
            .where(same_row, sa.not_(stage.c[OK]))
            .values(failures=stage.c[FAILURES], quarantined_at=sa.func.now())
        )
        conn.execute(sa.delete(quarantine_rows).where(same_row, stage.c[OK]))
        outcome = merge_stage(conn, source, stage)
        for file_id, got in counts.items():
            landed = outcome.landed.get(file_id, 0)
            book.shift(conn, file_id, quarantined=-got.ok, clean=landed, replaced=got.ok - landed)
        for file_id, count in outcome.displaced.items():
            book.shift(conn, file_id, clean=-count, replaced=count)
        if snapshot is not None:
            snapshot.record(conn)
    released = sum(c.ok for c in counts.values())
    landed_total = sum(outcome.landed.values())
    report = ReplayReport(
        source=source.name,
        examined=released + sum(c.failed for c in counts.values()),
        released=released,
        landed=landed_total,
        replaced=released - landed_total,
        still_quarantined=sum(c.failed for c in counts.values()),
    )
    log.info("replayed quarantine", **report.__dict__)
    return report


def rebuild_clean(
    warehouse: Warehouse, source: SourceSpec, lookups: LookupUses = ()
) -> CleanReport:
    """Drop `clean.<source>` and its quarantine, then clean every loaded file version again.

    The way out of a schema drift the catalog owner wants (e.g. a column's type changed).
    """
    with warehouse.begin() as conn:
        book.lock_source(conn, source.name)
        drop_clean_table(conn, source)
        conn.execute(sa.delete(quarantine_rows).where(quarantine_rows.c.source == source.name))
        conn.execute(
            sa.update(ledger)
            .where(ledger.c.source == source.name, ledger.c.status == "loaded")
            .values(
                cleaned_at=None,
                clean_rows=None,
                quarantined_rows=None,
                replaced_rows=None,
                updated_at=sa.func.now(),
            )
        )
        conn.execute(
            sa.update(ledger)
            .where(ledger.c.source == source.name, ledger.c.status == "superseded")
            .values(
                clean_rows=0,
                quarantined_rows=0,
                replaced_rows=sa.func.coalesce(ledger.c.row_count, 0),
                updated_at=sa.func.now(),
            )
        )
    # The rebuilt reference compares with an empty table: every fact row's periods are touched.
    return clean_pending(warehouse, source, lookups)
