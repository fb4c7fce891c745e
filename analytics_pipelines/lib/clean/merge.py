"""Set-based writes of a staged batch: quarantine, de-duplicating upsert, touched periods.

De-duplication rule: for one primary key the row of the newest file version wins (file ids grow
with every version discovered), then the last line within that file. The same rule decides
inside the batch (DISTINCT ON) and against rows already in clean (ON CONFLICT … WHERE), so the
result does not depend on the order in which files are cleaned.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean.stage import FAILURES, OK, RAW
from analytics_pipelines.lib.tables import (
    CLEANED_AT,
    FILE_ID,
    LINE,
    SQL_TYPES,
    clean_table,
    quarantine_rows,
    temporary_table,
    touched_periods,
)

SLOT = "15 minutes"
SLOT_ORIGIN = "2000-01-01 00:00:00+00"


@dataclass(frozen=True)
class StageCounts:
    ok: int
    failed: int
    first_date: date | None
    last_date: date | None


@dataclass
class MergeOutcome:
    landed: dict[int, int] = field(default_factory=dict)
    displaced: dict[int, int] = field(default_factory=dict)


def slot_of(value: sa.ColumnElement, source: SourceSpec) -> sa.ColumnElement:
    """The 15-minute UTC slot holding an event-time value (a date is its local midnight)."""
    if source.column(source.event_column).type == "date":
        value = sa.func.timezone(source.timezone, sa.cast(value, sa.DateTime()))
    return sa.func.date_bin(
        sa.cast(sa.literal(SLOT), postgresql.INTERVAL),
        value,
        sa.cast(sa.literal(SLOT_ORIGIN), sa.DateTime(timezone=True)),
    )


def business_date(value: sa.ColumnElement, source: SourceSpec) -> sa.ColumnElement:
    if source.column(source.event_column).type == "date":
        return value
    return sa.cast(sa.func.timezone(source.timezone, value), sa.Date)


def stage_counts(conn: Connection, source: SourceSpec, stage: sa.Table) -> dict[int, StageCounts]:
    ok = stage.c[OK]
    # A reference source has no business dates: its rows are not placed in time.
    day = (
        business_date(stage.c[source.event_time], source)
        if source.event_time is not None
        else sa.cast(sa.null(), sa.Date)
    )
    rows = conn.execute(
        sa.select(
            stage.c[FILE_ID],
            sa.func.count().filter(ok),
            sa.func.count().filter(sa.not_(ok)),
            sa.func.min(day).filter(ok),
            sa.func.max(day).filter(ok),
        ).group_by(stage.c[FILE_ID])
    )
    return {int(r[0]): StageCounts(int(r[1]), int(r[2]), r[3], r[4]) for r in rows}


def quarantine_failures(conn: Connection, source: SourceSpec, stage: sa.Table) -> int:
    """Write every failing staged row to quarantine.rows (again, if it was there before)."""
    statement = postgresql.insert(quarantine_rows).from_select(
        ["source", "file_id", "line", "raw_values", "failures"],
        sa.select(
            sa.literal(source.name, sa.Text),
            stage.c[FILE_ID],
            stage.c[LINE],
            stage.c[RAW],
            stage.c[FAILURES],
        ).where(sa.not_(stage.c[OK])),
    )
    statement = statement.on_conflict_do_update(
        index_elements=["source", "file_id", "line"],
        set_={
            "raw_values": statement.excluded.raw_values,
            "failures": statement.excluded.failures,
            "quarantined_at": sa.func.now(),
        },
    )
    return int(conn.execute(statement).rowcount or 0)


def _event_of(table: sa.Table, source: SourceSpec) -> list[sa.ColumnElement]:
    """The event-time column as `event`; none for a reference source (nothing to record)."""
    return [table.c[source.event_time].label("event")] if source.event_time is not None else []


def merge_stage(conn: Connection, source: SourceSpec, stage: sa.Table) -> MergeOutcome:
    """Upsert the passing staged rows into clean; record touched slots; count per file.

    One statement: the snapshot that finds the clean rows about to be replaced (to count them
    against their file and to record their old event time) is the one the upsert works on.
    A reference source records no slots of its own (lib/clean/reference_changes does, for the
    sources that look it up).
    """
    clean = clean_table(source)
    pk = list(source.primary_key)
    data_columns = [c.name for c in source.columns]

    winners = (
        sa.select(*(stage.c[name] for name in [*data_columns, FILE_ID, LINE]))
        .where(stage.c[OK])
        .ext(postgresql.distinct_on(*(stage.c[k] for k in pk)))
        .order_by(*(stage.c[k] for k in pk), stage.c[FILE_ID].desc(), stage.c[LINE].desc())
        .cte("winners")
    )
    version = sa.tuple_(clean.c[FILE_ID], clean.c[LINE])
    incoming = sa.tuple_(winners.c[FILE_ID], winners.c[LINE])
    older_rows = (
        sa.select(
            clean.c[FILE_ID].label("file_id"),
            winners.c[FILE_ID].label("cause"),
            *_event_of(clean, source),
        )
        .select_from(clean.join(winners, sa.and_(*(clean.c[k] == winners.c[k] for k in pk))))
        .where(version < incoming)
    )
    insert = postgresql.insert(clean).from_select(
        [*data_columns, FILE_ID, LINE], sa.select(*winners.c)
    )
    # An empty clean table (first load, rebuild) needs no conflict handling: a plain insert in
    # key order (DISTINCT ON sorted it) is several times cheaper than speculative insertion.
    empty = conn.execute(sa.select(~sa.exists().select_from(clean))).scalar_one()
    if empty:
        older_rows = older_rows.where(sa.false())
    upsert = (
        insert
        if empty
        else insert.on_conflict_do_update(
            index_elements=pk,
            set_={
                **{name: insert.excluded[name] for name in data_columns if name not in pk},
                FILE_ID: insert.excluded[FILE_ID],
                LINE: insert.excluded[LINE],
                CLEANED_AT: sa.func.now(),
            },
            # Equal versions: the same row cleaned again (rebuild, replay) is refreshed in place.
            where=version <= sa.tuple_(insert.excluded[FILE_ID], insert.excluded[LINE]),
        )
    )
    replaced = older_rows.cte("replaced")
    landed = upsert.returning(clean.c[FILE_ID].label("file_id"), *_event_of(clean, source))
    landed_cte = landed.cte("landed")
    summary = sa.union_all(
        sa.select(sa.literal("landed"), landed_cte.c.file_id, sa.func.count()).group_by(
            landed_cte.c.file_id
        ),
        sa.select(sa.literal("displaced"), replaced.c.file_id, sa.func.count()).group_by(
            replaced.c.file_id
        ),
    )
    statement = (
        summary
        if source.event_time is None
        else summary.add_cte(_record_touched(source, landed_cte, replaced))
    )
    outcome = MergeOutcome()
    for kind, file_id, count in conn.execute(statement):
        target = outcome.landed if kind == "landed" else outcome.displaced
        target[int(file_id)] = int(count)
    return outcome


def _record_touched(source: SourceSpec, landed_cte: sa.CTE, replaced: sa.CTE) -> sa.CTE:
    """The insert of the slots of the landed rows and of the rows they replaced."""
    touched = sa.union_all(
        sa.select(landed_cte.c.file_id, landed_cte.c.event),
        sa.select(replaced.c.cause, replaced.c.event),
    ).subquery("touched")
    record = sa.insert(touched_periods).from_select(
        ["source", "file_id", "slot_start"],
        sa.select(
            sa.literal(source.name, sa.Text),
            touched.c.file_id,
            slot_of(touched.c.event, source).label("slot"),
        )
        .where(touched.c.event.is_not(None))
        .distinct(),
    )
    return record.cte("recorded")


VACATED_KEYS = "_vacated_keys"


@dataclass
class Removal:
    """Rows taken out of clean: per file, and the primary keys they left empty (`vacated`)."""

    removed: dict[int, int] = field(default_factory=dict)
    vacated: sa.Table | None = None

    @property
    def total(self) -> int:
        return sum(self.removed.values())


def vacated_keys_table(source: SourceSpec) -> sa.Table:
    """A transaction-local table of primary keys (typed as in clean) that lost their clean row."""
    return temporary_table(
        VACATED_KEYS, *(sa.Column(k, SQL_TYPES[source.column(k).type]) for k in source.primary_key)
    )


def remove_files_from_clean(
    conn: Connection, source: SourceSpec, attribution: dict[int, int]
) -> Removal:
    """Delete the clean rows of the given files, recording the slots they leave and their keys.

    `attribution` maps each file whose rows go to the file the touched slots are recorded for
    (a superseded version's slots are recorded for its correction). The keys left empty are
    kept in `Removal.vacated` for the rest of the transaction: an older current version may
    hold a row for them again (see reinstate.reinstate_vacated).
    """
    if not attribution:
        return Removal()
    clean = clean_table(source)
    pk = list(source.primary_key)
    vacated = vacated_keys_table(source)
    vacated.create(conn)
    deleted = (
        sa.delete(clean)
        .where(clean.c[FILE_ID].in_(list(attribution)))
        .returning(
            clean.c[FILE_ID].label("file_id"), *_event_of(clean, source), *(clean.c[k] for k in pk)
        )
        .cte("deleted")
    )
    keep_keys = (
        sa.insert(vacated).from_select(pk, sa.select(*(deleted.c[k] for k in pk))).cte("kept_keys")
    )
    statement = sa.select(deleted.c.file_id, sa.func.count()).group_by(deleted.c.file_id)
    if source.event_time is not None:
        statement = statement.add_cte(_record_removed(source, deleted, attribution))
    statement = statement.add_cte(keep_keys)
    removed: dict[int, int] = defaultdict(int)
    for file_id, count in conn.execute(statement):
        removed[int(file_id)] = int(count)
    return Removal(dict(removed), vacated)


def _record_removed(source: SourceSpec, deleted: sa.CTE, attribution: dict[int, int]) -> sa.CTE:
    """The insert of the slots the deleted rows leave, recorded for the file that caused it."""
    mapping = sa.values(
        sa.column("file_id", sa.BigInteger), sa.column("cause", sa.BigInteger), name="mapping"
    ).data(list(attribution.items()))
    return (
        sa.insert(touched_periods)
        .from_select(
            ["source", "file_id", "slot_start"],
            sa.select(
                sa.literal(source.name, sa.Text),
                mapping.c.cause,
                slot_of(deleted.c.event, source).label("slot"),
            )
            .select_from(deleted.join(mapping, mapping.c.file_id == deleted.c.file_id))
            .where(deleted.c.event.is_not(None))
            .distinct(),
        )
        .cte("recorded")
    )
