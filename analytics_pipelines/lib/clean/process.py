"""Clean the file versions of a source that are loaded but not yet cleaned, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean import ledger as book
from analytics_pipelines.lib.clean.binary_clean import clean_into_empty
from analytics_pipelines.lib.clean.merge import (
    StageCounts,
    merge_stage,
    quarantine_failures,
    remove_files_from_clean,
    stage_counts,
)
from analytics_pipelines.lib.clean.reference_changes import LookupUses, ReferenceSnapshot
from analytics_pipelines.lib.clean.reinstate import reinstate_vacated
from analytics_pipelines.lib.clean.schema import (
    add_primary_key,
    ensure_clean_table,
    live_columns,
    raw_columns,
)
from analytics_pipelines.lib.clean.stage import RawInput, build_stage, raw_input_table
from analytics_pipelines.lib.logging import get_logger
from analytics_pipelines.lib.tables import CLEAN_SCHEMA, FILE_ID, RAW_SCHEMA, clean_table
from analytics_pipelines.lib.warehouse import Warehouse

log = get_logger(__name__)

# Sorting the batch by primary key (DISTINCT ON) stays in memory up to this size per sort.
WORK_MEM = "256MB"


@dataclass(frozen=True)
class CleanReport:
    """What one clean run did (rows are counted per raw row of the files it cleaned)."""

    source: str
    file_ids: tuple[int, ...] = ()
    raw_rows: int = 0
    clean_rows: int = 0
    quarantined_rows: int = 0
    replaced_rows: int = 0
    displaced_rows: int = 0
    removed_rows: int = 0
    # Rows of older current versions that win again once the version that displaced them left.
    reinstated_rows: int = 0
    retired_files: tuple[int, ...] = ()
    schema_changes: tuple[str, ...] = ()
    # A reference source: which periods of the sources looking it up its changes touched.
    reference_changes: tuple[str, ...] = ()

    @property
    def files(self) -> int:
        return len(self.file_ids)


def set_local(conn: Connection, setting: str, value: str) -> None:
    conn.execute(sa.select(sa.func.set_config(setting, value, True)))


def _empty_if_nothing_left(conn: Connection, source: SourceSpec) -> None:
    """Every row left clean (a correction of everything in it): TRUNCATE the dead rows, so the
    new ones go in as into a new table rather than past a dead index entry each. Readers of
    the table wait for this transaction's commit instead of reading the old rows meanwhile."""
    clean = clean_table(source)
    if not conn.execute(sa.select(sa.exists().select_from(clean))).scalar_one():
        preparer = conn.dialect.identifier_preparer
        conn.execute(sa.text(f"TRUNCATE {preparer.format_table(clean)}"))


def clean_pending(
    warehouse: Warehouse, source: SourceSpec, lookups: LookupUses = ()
) -> CleanReport:
    """Validate, type and de-duplicate every loaded, not yet cleaned file version of `source`.

    Rows that pass go to `clean.<source>`, failing rows to `quarantine.rows`; superseded
    versions leave clean, and the rows they had displaced from older current versions come
    back (lib/clean/reinstate); the ledger counters and the touched 15-minute slots are recorded in
    the same transaction. Raises SchemaDriftError (changing nothing) on an incompatible catalog.
    For a reference source, `lookups` are the (fact source, lookup) pairs reading it: the
    periods of their rows whose reference row changed are recorded as touched.
    """
    with warehouse.begin() as conn:
        book.lock_source(conn, source.name)
        set_local(conn, "work_mem", WORK_MEM)
        # Naive timestamps are read in the source's zone by the casts themselves (see stage).
        set_local(conn, "TimeZone", source.timezone)
        # A new table gets its primary key once filled: one index build, not row by row.
        created = live_columns(conn, CLEAN_SCHEMA, source.name) is None
        changes = ensure_clean_table(conn, source, defer_primary_key=created)
        snapshot = ReferenceSnapshot.take(conn, source, lookups)

        retiring = book.superseded_to_retire(conn, source.name)
        removal = remove_files_from_clean(
            conn,
            source,
            {fid: (cause or fid) for fid, (cause, in_clean) in retiring.items() if in_clean > 0},
        )
        book.retire(conn, list(retiring))
        # Before the new batch: it competes with the reinstated rows under the usual rule.
        reinstated = (
            sum(reinstate_vacated(conn, source, removal.vacated).landed.values())
            if removal.vacated is not None
            else 0
        )

        if removal.total and not reinstated:
            _empty_if_nothing_left(conn, source)

        pending = book.pending_files(conn, source.name)
        ids = [p.file_id for p in pending]
        live = raw_columns(conn, source) if pending else None
        counts: dict[int, StageCounts] = {}
        landed: dict[int, int] = {}
        displaced: dict[int, int] = {}
        if live is not None:
            raw = raw_input_table(RAW_SCHEMA, source.name, live)
            rows = RawInput(raw, [c.name for c in raw.columns][:-2], raw.c[FILE_ID].in_(ids))
            direct = clean_into_empty(conn, warehouse, source, rows, ids, add_key=created)
            if direct is not None:
                for file_id, version in direct.items():
                    counts[file_id] = StageCounts(
                        version.ok_rows, version.failed_rows, version.first_date, version.last_date
                    )
                    landed[file_id] = version.landed_rows
            else:
                stage = build_stage(conn, source, rows)
                counts = stage_counts(conn, source, stage)
                quarantine_failures(conn, source, stage)
                outcome = merge_stage(conn, source, stage)
                landed, displaced = outcome.landed, outcome.displaced
                if created:
                    add_primary_key(conn, source)

        ok = failed = 0
        for file in pending:
            got = counts.get(file.file_id, StageCounts(0, 0, None, None))
            in_clean = landed.get(file.file_id, 0)
            book.record_cleaned(
                conn,
                file.file_id,
                clean_rows=in_clean,
                quarantined_rows=got.failed,
                replaced_rows=got.ok - in_clean,
                first_date=got.first_date,
                last_date=got.last_date,
            )
            ok, failed = ok + got.ok, failed + got.failed
            if got.ok + got.failed != file.row_count:
                log.warning(
                    "raw rows differ from the ledger",
                    source=source.name,
                    file_id=file.file_id,
                    ledger_rows=file.row_count,
                    raw_rows=got.ok + got.failed,
                )
        for file_id, count in displaced.items():
            book.shift(conn, file_id, clean=-count, replaced=count)

        in_clean = sum(landed.get(i, 0) for i in ids)
        report = CleanReport(
            source=source.name,
            file_ids=tuple(ids),
            raw_rows=ok + failed,
            clean_rows=in_clean,
            quarantined_rows=failed,
            replaced_rows=ok - in_clean,
            displaced_rows=sum(displaced.values()),
            removed_rows=removal.total,
            reinstated_rows=reinstated,
            retired_files=tuple(sorted(retiring)),
            schema_changes=tuple(changes),
            reference_changes=tuple(snapshot.record(conn) if snapshot else ()),
        )
    if ids:
        log.info("cleaned", **{k: v for k, v in report.__dict__.items() if k != "file_ids"})
    return report
