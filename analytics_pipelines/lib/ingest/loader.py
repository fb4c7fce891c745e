"""Load object versions into `raw.<source>`: one transaction per file, exactly once per content.

Per file: take the source's advisory lock, skip versions the ledger already knows, short-cut
content already loaded (duplicate), COPY the bytes into the version's own table with lineage
filled by column defaults, attach it as its partition of `raw.<source>`, replace the rows of
the key's earlier version (superseded), and record the outcome. A file
that cannot be read leaves no rows: its transaction rolls back and a `failed` ledger row with
the reason is written on its own, and the next file is loaded. Which errors concern one
object (recorded) and which the whole run (propagated, files stay pending): see `objects`.

`raw.<source>` changes only with a successful load: columns for a file's extra header names
are added in its load transaction, right before the COPY, after checking PostgreSQL's
column budget. That ALTER holds an ACCESS EXCLUSIVE lock on the table until the file commits:
loads of the source are serialised by the advisory lock anyway; a clean stage reading raw
waits for that commit (it holds no lock this transaction needs, so they cannot deadlock); the
clean side beside the COPY (`clean_seam`) reads no raw table (the raw columns are read on
this connection, which sees its own new columns). A header-only file is a delivery with 0 rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import IO, cast

import psycopg2
import sqlalchemy as sa
from psycopg2 import sql
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest import beside_copy, ledger, statuses
from analytics_pipelines.lib.ingest.beside_copy import BesideCopy
from analytics_pipelines.lib.ingest.clean_seam import CleanBesideLoadFactory
from analytics_pipelines.lib.ingest.errors import FileRejected
from analytics_pipelines.lib.ingest.event_range import event_date_range
from analytics_pipelines.lib.ingest.event_text import EventDates
from analytics_pipelines.lib.ingest.jsonl import stage_and_insert_jsonl
from analytics_pipelines.lib.ingest.objects import (
    candidates,
    failure_reason,
    pages,
    refuse_foreign_keys,
)
from analytics_pipelines.lib.ingest.raw_tables import (
    FILE_ID_SETTING,
    attach_file_table,
    delete_file_rows,
    drop_emptied_partitions,
    drop_file_table,
    ensure_raw_table,
    existing_columns,
    hand_over_rows,
    line_sequence_regclass,
    lock_source,
    map_columns,
    open_file_table,
    run_sql,
)
from analytics_pipelines.lib.ingest.readers import plan_copy
from analytics_pipelines.lib.ingest.streams import HashingReader
from analytics_pipelines.lib.ingest.translate import describe_copy_error
from analytics_pipelines.lib.logging import get_logger
from analytics_pipelines.lib.storage import ObjectInfo, ObjectStore
from analytics_pipelines.lib.tables import FILE_ID, LINE, LOADED_AT, RAW_SCHEMA
from analytics_pipelines.lib.tables import ledger as ledger_table
from analytics_pipelines.lib.warehouse import Warehouse, copy_from

log = get_logger("analytics_pipelines.ingest")

SKIPPED = "skipped"
LEDGER_PAGE = 1000


@dataclass
class FileOutcome:
    key: str
    etag: str
    status: str
    file_id: int | None = None
    rows: int = 0
    error: str | None = None
    duplicate_of: int | None = None
    superseded: list[int] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    business_date_min: date | None = None
    business_date_max: date | None = None
    # True when the file was also cleaned beside its COPY (see clean_seam).
    cleaned: bool = False


@dataclass
class LoadReport:
    """What one call of `load_pending` did, file by file."""

    source: str
    outcomes: list[FileOutcome] = field(default_factory=list)
    # Requested versions an earlier run loaded but did not clean (it stopped in between):
    # committed rows that no materialisation has reported yet.
    loaded_earlier: list[FileOutcome] = field(default_factory=list)

    def with_status(self, status: str) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def rows(self) -> int:
        return sum(o.rows for o in self.outcomes if o.status == statuses.LOADED)

    @property
    def failures(self) -> list[FileOutcome]:
        return self.with_status(statuses.FAILED)

    @property
    def loaded_file_ids(self) -> list[int]:
        return [o.file_id for o in self.with_status(statuses.LOADED) if o.file_id is not None]

    @property
    def cleaned_file_ids(self) -> list[int]:
        return [o.file_id for o in self.outcomes if o.cleaned and o.file_id is not None]

    @property
    def superseded_file_ids(self) -> list[int]:
        return [f for o in self.outcomes for f in o.superseded]

    @property
    def extra_columns(self) -> list[str]:
        return sorted({c for o in self.outcomes for c in o.extra_columns})


@dataclass
class _Copied:
    rows: int
    content_hash: str
    size: int
    extra_columns: list[str]
    extra_headers: dict[str, str]
    present_columns: list[str]


def _copy_file(
    conn: Connection,
    source: SourceSpec,
    store: ObjectStore,
    info: ObjectInfo,
    file_id: int,
    beside: BesideCopy,
) -> _Copied:
    with store.open(info.key) as raw:
        hashing = HashingReader(raw, lambda: store.known_md5(raw))
        plan = plan_copy(cast(IO[bytes], hashing), source, info.key)
        try:
            if plan.kind == "jsonl":
                rows, mapping = stage_and_insert_jsonl(conn, source, plan, file_id)
            else:
                mapping = map_columns(source, plan.columns)
                target = open_file_table(conn, source.name, file_id, mapping.extra)
                run_sql(
                    conn,
                    sql.SQL("SELECT setval(%s::regclass, %s, false)"),
                    [line_sequence_regclass(source.name), plan.first_line],
                )
                columns = ([LINE] if plan.line_in_body else []) + mapping.targets
                body = plan.body
                if beside_copy.applies(plan):
                    live = existing_columns(conn, source.name)
                    body = beside.start(
                        plan,
                        file_id=file_id,
                        received=mapping.targets,
                        raw_columns=[c for c in live if c not in (FILE_ID, LINE, LOADED_AT)],
                        correction=any(
                            v.status == statuses.LOADED
                            for v in ledger.earlier_versions(conn, source.name, info.key, file_id)
                        ),
                    )
                try:
                    rows = copy_from(
                        conn, (RAW_SCHEMA, target), columns, body, options=plan.options
                    )
                except psycopg2.DataError as error:
                    raise FileRejected(
                        describe_copy_error(error, source, plan.first_line, len(columns))
                    ) from None
                beside.end_of_input()
            hashing.drain()
            # While the object is open: the store vouches for a hash only of an open file.
            content_hash = hashing.hexdigest
        finally:
            plan.close()
    return _Copied(
        rows, content_hash, hashing.size, mapping.extra, mapping.extra_headers, mapping.targets
    )


def _retire_earlier(conn: Connection, source: SourceSpec, key: str, file_id: int) -> list[int]:
    """Supersede the key's earlier versions; their raw rows go in this transaction.

    If another key still delivers the same content as a superseded version (it was recorded
    as its duplicate), its rows stay and are handed over to that duplicate instead.
    """
    earlier = ledger.earlier_versions(conn, source.name, key, file_id)
    for version in earlier:
        if version.status != statuses.LOADED:
            continue
        heirs = ledger.live_duplicates_of(conn, version.file_id, key)
        if heirs:
            heir = heirs[0].file_id
            hand_over_rows(conn, source.name, version.file_id, heir)
            old = ledger.version(conn, version.file_id)
            ledger.update_version(
                conn,
                heir,
                status=statuses.LOADED,
                duplicate_of=None,
                row_count=old.row_count,
                extra_columns=old.extra_columns,
                business_date_min=old.business_date_min,
                business_date_max=old.business_date_max,
                loaded_at=sa.func.now(),
                cleaned_at=None,
            )
            for other in heirs[1:]:
                ledger.update_version(conn, other.file_id, duplicate_of=heir)
        else:
            delete_file_rows(conn, source.name, version.file_id)
    for version in earlier:
        ledger.update_version(
            conn, version.file_id, status=statuses.SUPERSEDED, superseded_by=file_id
        )
    return [v.file_id for v in earlier if v.status == statuses.LOADED]


def _settle_failures(conn: Connection, source: SourceSpec, key: str, file_id: int) -> None:
    """The key's earlier failed versions are superseded by `file_id`."""
    for version in ledger.earlier_versions(conn, source.name, key, file_id):
        if version.status == statuses.FAILED:
            ledger.update_version(
                conn, version.file_id, status=statuses.SUPERSEDED, superseded_by=file_id
            )


def _mark_duplicate(
    conn: Connection, source: SourceSpec, info: ObjectInfo, file_id: int, original: int
) -> FileOutcome:
    ledger.update_version(
        conn, file_id, status=statuses.DUPLICATE, duplicate_of=original, row_count=0
    )
    same_key_original = ledger.version(conn, original).object_key == info.key
    if not same_key_original:
        superseded = _retire_earlier(conn, source, info.key, file_id)
    else:
        # The key is back at the content it holds (A, failed B, A): B's failure is settled.
        superseded = []
        _settle_failures(conn, source, info.key, file_id)
    return FileOutcome(
        info.key,
        info.etag,
        statuses.DUPLICATE,
        file_id,
        duplicate_of=original,
        superseded=superseded,
    )


def _load_in_transaction(
    conn: Connection,
    warehouse: Warehouse,
    source: SourceSpec,
    store: ObjectStore,
    info: ObjectInfo,
    run_id: str | None,
    beside: BesideCopy,
) -> FileOutcome:
    lock_source(conn, source.name)
    if (info.key, info.etag) in ledger.known_versions(conn, source.name, [info.key]):
        return FileOutcome(info.key, info.etag, SKIPPED)
    original = (
        ledger.loaded_with_content(conn, source.name, info.etag)
        if ledger.etag_is_md5(info.etag)
        else None
    )
    file_id = ledger.insert_version(
        conn,
        source.name,
        info,
        status=statuses.LOADING,
        run_id=run_id,
        content_hash=info.etag if original else None,
    )
    if original is not None:
        return _mark_duplicate(conn, source, info, file_id, original)
    # Naive event times are read in the source's zone when the business dates are computed.
    run_sql(
        conn,
        sql.SQL("SELECT set_config(%s, %s, true), set_config('TimeZone', %s, true)"),
        [FILE_ID_SETTING, str(file_id), source.timezone],
    )
    copied = _copy_file(conn, source, store, info, file_id, beside)
    ledger.update_version(conn, file_id, content_hash=copied.content_hash, size_bytes=copied.size)
    original = ledger.loaded_with_content(conn, source.name, copied.content_hash)
    if original is not None:
        drop_file_table(conn, source.name, file_id)
        return _mark_duplicate(conn, source, info, file_id, original)
    attach_file_table(conn, source.name, file_id)
    # What read the bytes beside the COPY also knows the business dates, mostly.
    dates = beside.business_dates(copied.rows)
    low, high = (
        dates
        if dates is not None
        else event_date_range(conn, source, file_id, copied.present_columns)
    )
    superseded = _retire_earlier(conn, source, info.key, file_id)
    ledger.update_version(
        conn,
        file_id,
        status=statuses.LOADED,
        row_count=copied.rows,
        extra_columns=copied.extra_columns or None,
        extra_column_headers=copied.extra_headers or None,
        business_date_min=low,
        business_date_max=high,
        loaded_at=sa.func.now(),
    )
    return FileOutcome(
        info.key,
        info.etag,
        statuses.LOADED,
        file_id,
        rows=copied.rows,
        superseded=superseded,
        extra_columns=copied.extra_columns,
        business_date_min=low,
        business_date_max=high,
    )


def _record_failure(
    warehouse: Warehouse, source: SourceSpec, info: ObjectInfo, reason: str, run_id: str | None
) -> FileOutcome:
    with warehouse.begin() as conn:
        lock_source(conn, source.name)
        if (info.key, info.etag) in ledger.known_versions(conn, source.name, [info.key]):
            return FileOutcome(info.key, info.etag, SKIPPED)
        file_id = ledger.insert_version(
            conn, source.name, info, status=statuses.FAILED, run_id=run_id, error=reason
        )
        # An earlier failure of the same key is settled by this newer attempt; loaded data stays.
        _settle_failures(conn, source, info.key, file_id)
    return FileOutcome(info.key, info.etag, statuses.FAILED, file_id, error=reason)


def load_object(
    source: SourceSpec,
    store: ObjectStore,
    warehouse: Warehouse,
    info: ObjectInfo,
    *,
    run_id: str | None = None,
    clean_while_loading: CleanBesideLoadFactory | None = None,
) -> FileOutcome:
    """Load one object version; a version that cannot be loaded ends `failed` (returned, not raised).

    With `clean_while_loading`, a new CSV-shaped version is also cleaned from the same bytes
    (see clean_seam); corrections and whatever that side declines stay for the clean stage.
    Infrastructure errors (database or store unreachable) propagate: the file stays pending.
    """
    if info.problem is not None:
        # Listed as unreadable (a FIFO, a link out of the folder...): never opened.
        outcome = _record_failure(warehouse, source, info, info.problem, run_id)
        _log_outcome(source, outcome)
        return outcome
    # Without cleaning, the bytes are still read beside the COPY for the business dates.
    beside = BesideCopy((clean_while_loading or EventDates)(warehouse, source), source)
    try:
        with warehouse.begin() as conn:
            outcome = _load_in_transaction(conn, warehouse, source, store, info, run_id, beside)
        # Raw is committed: the clean rows follow (a correction is the clean stage's).
        if outcome.status == statuses.LOADED and not outcome.superseded and outcome.file_id:
            outcome.cleaned = beside.commit(outcome.file_id)
        beside.abort()
    except Exception as error:
        reason = failure_reason(error, source)
        if reason is None:
            raise
        outcome = _record_failure(warehouse, source, info, reason, run_id)
    finally:
        beside.abort()
    _log_outcome(source, outcome)
    return outcome


def _log_outcome(source: SourceSpec, outcome: FileOutcome) -> None:
    log.info(
        "ingest file",
        source=source.name,
        key=outcome.key,
        status=outcome.status,
        rows=outcome.rows,
        file_id=outcome.file_id,
        error=outcome.error,
    )


def _loaded_earlier(
    conn: Connection, source: str, versions: Sequence[tuple[str, str]], run_id: str | None
) -> list[FileOutcome]:
    """Of these current versions, those another run loaded and nothing cleaned yet."""
    if not versions:
        return []
    wanted = set(versions)
    rows = conn.execute(
        sa.select(
            ledger_table.c.object_key,
            ledger_table.c.etag,
            ledger_table.c.file_id,
            ledger_table.c.row_count,
        )
        .where(
            ledger_table.c.source == source,
            ledger_table.c.object_key.in_(sorted({k for k, _ in wanted})),
            ledger_table.c.status == statuses.LOADED,
            ledger_table.c.cleaned_at.is_(None),
            ledger_table.c.run_id.is_distinct_from(run_id),
        )
        .order_by(ledger_table.c.file_id)
    )
    return [
        FileOutcome(
            r.object_key, r.etag, statuses.LOADED, int(r.file_id), rows=int(r.row_count or 0)
        )
        for r in rows
        if (r.object_key, r.etag) in wanted
    ]


def load_pending(
    source: SourceSpec,
    store: ObjectStore,
    warehouse: Warehouse,
    *,
    keys: Sequence[str] | None = None,
    run_id: str | None = None,
    clean_while_loading: CleanBesideLoadFactory | None = None,
) -> LoadReport:
    """Load every object version under the source's landing prefix (or `keys`) not yet in the ledger.

    KeysRefused, before anything is loaded, when a key is not under the landing prefix. For
    `keys` (a run launched for them), versions loaded by an earlier run that stopped before
    cleaning them are reported in `loaded_earlier`.
    """
    if keys is not None:
        refuse_foreign_keys(source, keys)
    ensure_raw_table(warehouse, source)
    with warehouse.begin() as conn:
        lock_source(conn, source.name)
        dropped = drop_emptied_partitions(conn, source.name)
    if dropped:
        log.info("dropped emptied raw partitions", source=source.name, file_ids=dropped)
    report = LoadReport(source.name)
    for page in pages(candidates(source, store, keys), LEDGER_PAGE):
        with warehouse.connect() as conn:
            known = ledger.known_versions(conn, source.name, [i.key for i in page])
            if keys is not None:
                settled = [(i.key, i.etag) for i in page if (i.key, i.etag) in known]
                report.loaded_earlier += _loaded_earlier(conn, source.name, settled, run_id)
        for info in page:
            if (info.key, info.etag) in known:
                continue
            outcome = load_object(
                source,
                store,
                warehouse,
                info,
                run_id=run_id,
                clean_while_loading=clean_while_loading,
            )
            if outcome.status != SKIPPED:
                report.outcomes.append(outcome)
    return report
