"""The Parquet lake: cleaned rows archived per business date, and raw retention behind it.

Layout: `lake/<source>/date=YYYY-MM-DD/part-0.parquet` in the object store (a hive-partitioned
dataset). Each archived date is rewritten whole, so a re-archive replaces the date's files.

Which dates: those holding a clean row cleaned since the source's watermark, plus the dates a
cleaned file version touched since then (`ingest.touched_periods`, which also names the dates a
corrected file took rows away from). The watermark is an instant before which every cleaning
transaction had committed when the archive read its snapshot: the start of the oldest other
transaction still open in the database (or now), minus a safety margin. A clean row carries its
transaction's start time, so a cleaning still running while we read is picked up next time.

Retention rule (only after their dates are archived): a raw row is deleted when
  * the source declares `raw_retention_days` and the row was loaded longer ago than that, and
  * the ledger says its file version was cleaned (`cleaned_at` set), and
  * every clean row of that file version lies on a business date archived by a run whose
    watermark is later than the row's cleaning (`archive_dates.covers_cleaned_before`).
Rows of a file that reached clean nowhere (all quarantined or replaced) qualify on age alone:
quarantine keeps their raw values and the ledger keeps the file's record.

Memory stays bounded: each date streams `COPY (SELECT ...) TO STDOUT` into a temporary file,
which pyarrow reads back in blocks and writes as Parquet row groups to another temporary file.
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from dataclasses import dataclass, field
from typing import IO, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa
from psycopg2 import sql
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import ColumnType, SourceSpec
from analytics_pipelines.lib.logging import get_logger
from analytics_pipelines.lib.storage import LAKE_PREFIX, ObjectStore
from analytics_pipelines.lib.tables import (
    CLEAN_SCHEMA,
    CLEANED_AT,
    FILE_ID,
    LINE,
    LOADED_AT,
    RAW_SCHEMA,
    clean_table,
    ledger,
    touched_periods,
)
from analytics_pipelines.lib.warehouse import Warehouse

log = get_logger(__name__)

PART_NAME = "part-0.parquet"
# Catalog decimals have no declared scale: 9 places hold money and rates; more fails loudly.
DECIMAL_TYPE = pa.decimal128(38, 9)
# Covers the lag between a transaction's start and its appearance in pg_stat_activity.
SAFETY_MARGIN = dt.timedelta(seconds=30)
CSV_BLOCK_BYTES = 16 << 20

ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "decimal": DECIMAL_TYPE,
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}

_metadata = sa.MetaData()

archive_dates = sa.Table(
    "archive_dates",
    _metadata,
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("business_date", sa.Date, primary_key=True),
    sa.Column("rows", sa.BigInteger),
    sa.Column("object_key", sa.Text),
    sa.Column("covers_cleaned_before", sa.DateTime(timezone=True)),
    sa.Column("archived_at", sa.DateTime(timezone=True)),
    sa.Column("run_id", sa.Text),
    schema="ingest",
)

archive_watermarks = sa.Table(
    "archive_watermarks",
    _metadata,
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("cleaned_before", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    schema="ingest",
)


class ArchiveError(Exception):
    """An archive could not be written; the message names the source and date."""


@dataclass
class ArchiveResult:
    source: str
    dates_archived: list[dt.date] = field(default_factory=list)
    dates_emptied: list[dt.date] = field(default_factory=list)
    rows: int = 0
    files: int = 0
    raw_rows_deleted: int = 0
    watermark: dt.datetime | None = None


def date_key(source: str, day: dt.date) -> str:
    return f"{date_prefix(source, day)}{PART_NAME}"


def date_prefix(source: str, day: dt.date) -> str:
    return f"{LAKE_PREFIX}/{source}/date={day.isoformat()}/"


def archived_columns(source: SourceSpec) -> list[tuple[str, pa.DataType]]:
    return [(c.name, ARROW_TYPES[c.type]) for c in source.columns] + [
        (FILE_ID, pa.int64()),
        (LINE, pa.int64()),
        (CLEANED_AT, pa.timestamp("us", tz="UTC")),
    ]


def business_date(source: SourceSpec, table: sa.Table) -> sa.ColumnElement[Any]:
    """The event time's calendar date in the source's time zone, as SQL."""
    column = table.c[source.event_column]
    if source.column(source.event_column).type == "date":
        return column
    return sa.cast(sa.func.timezone(source.timezone, column), sa.Date)


def _business_date_copy_sql(source: SourceSpec) -> sql.Composable:
    column = sql.Identifier(source.event_column)
    if source.column(source.event_column).type == "date":
        return column
    return sql.SQL("(timezone({}, {}))::date").format(sql.Literal(source.timezone), column)


def _safe_watermark(warehouse: Warehouse) -> dt.datetime:
    """An instant before which every transaction of this database has finished.

    Read before the archive's snapshot is taken, so whatever committed before it is visible.
    """
    with warehouse.connect() as conn:
        mark = conn.execute(
            sa.text(
                "SELECT least(now(), min(xact_start)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND backend_type = 'client backend'"
                " AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
            )
        ).scalar()
    assert isinstance(mark, dt.datetime)
    return mark - SAFETY_MARGIN


def _candidate_dates(
    conn: Connection, source: SourceSpec, clean: sa.Table, since: dt.datetime | None
) -> list[dt.date]:
    day = business_date(source, clean).label("day")
    cleaned = sa.select(day).where(day.is_not(None)).distinct()
    touched = (
        sa.select(sa.cast(sa.func.timezone(source.timezone, touched_periods.c.slot_start), sa.Date))
        .where(touched_periods.c.source == source.name)
        .distinct()
    )
    if since is not None:
        cleaned = cleaned.where(clean.c[CLEANED_AT] >= since)
        touched = touched.where(touched_periods.c.recorded_at >= since)
    days = conn.execute(sa.union(cleaned, touched)).scalars().all()
    return sorted(d for d in days if d is not None)


def _copy_date_to_csv(
    conn: Connection, source: SourceSpec, columns: list[str], day: dt.date, sink: IO[bytes]
) -> int:
    query = sql.SQL(
        "COPY (SELECT {columns} FROM {schema}.{table} WHERE {day} = {value} ORDER BY {order})"
        " TO STDOUT WITH (FORMAT csv)"
    ).format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        schema=sql.Identifier(CLEAN_SCHEMA),
        table=sql.Identifier(source.name),
        day=_business_date_copy_sql(source),
        value=sql.Literal(day),
        order=sql.SQL(", ").join(sql.Identifier(c) for c in source.primary_key),
    )
    cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(query, sink, size=1 << 20)
        return int(cursor.rowcount)
    finally:
        cursor.close()


def _csv_to_parquet(
    csv_file: IO[bytes],
    parquet_file: IO[bytes],
    schema: pa.Schema,
    where: str,
) -> None:
    try:
        reader = pacsv.open_csv(
            csv_file,
            read_options=pacsv.ReadOptions(column_names=schema.names, block_size=CSV_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict(zip(schema.names, schema.types, strict=True)),
                true_values=["t"],
                false_values=["f"],
                # COPY writes NULL unquoted-empty and '' as "": keep the two apart.
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        with pq.ParquetWriter(parquet_file, schema, compression="zstd") as writer:
            for batch in reader:
                writer.write_batch(batch)
    except pa.ArrowInvalid as error:
        raise ArchiveError(f"{where}: {_name_column(str(error), schema)}") from None


def _name_column(message: str, schema: pa.Schema) -> str:
    """pyarrow names CSV columns by position: say which catalog column it is."""
    match = re.search(r"CSV column #(\d+)", message)
    if match and int(match.group(1)) < len(schema.names):
        column = schema.field(int(match.group(1)))
        return f"column {column.name!r} ({column.type}): {message}"
    return message


def _replace_date_objects(store: ObjectStore, source: str, day: dt.date, keep: str | None) -> None:
    """Remove every object of the date's folder except `keep` (older parts, leftovers)."""
    for info in store.iter_all(date_prefix(source, day)):
        if info.key != keep:
            store.delete(info.key)


def _archive_date(
    conn: Connection,
    store: ObjectStore,
    source: SourceSpec,
    day: dt.date,
    schema: pa.Schema,
) -> int:
    where = f"archive of {source.name} for {day.isoformat()}"
    with (
        tempfile.TemporaryFile(prefix="archive-", suffix=".csv") as csv_file,
        tempfile.TemporaryFile(prefix="archive-", suffix=".parquet") as parquet_file,
    ):
        rows = _copy_date_to_csv(conn, source, schema.names, day, csv_file)
        if rows == 0:
            return 0
        csv_file.seek(0)
        _csv_to_parquet(csv_file, parquet_file, schema, where)
        parquet_file.seek(0)
        key = date_key(source.name, day)
        store.write(key, parquet_file)
    _replace_date_objects(store, source.name, day, keep=key)
    return rows


def _record_date(
    conn: Connection,
    source: str,
    day: dt.date,
    rows: int,
    watermark: dt.datetime,
    run_id: str | None,
) -> None:
    from sqlalchemy.dialects.postgresql import insert

    statement = insert(archive_dates).values(
        source=source,
        business_date=day,
        rows=rows,
        object_key=date_key(source, day),
        covers_cleaned_before=watermark,
        archived_at=sa.func.now(),
        run_id=run_id,
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[archive_dates.c.source, archive_dates.c.business_date],
            set_={
                "rows": statement.excluded.rows,
                "object_key": statement.excluded.object_key,
                "covers_cleaned_before": statement.excluded.covers_cleaned_before,
                "archived_at": statement.excluded.archived_at,
                "run_id": statement.excluded.run_id,
            },
        )
    )


def _advance_watermark(conn: Connection, source: str, watermark: dt.datetime) -> None:
    from sqlalchemy.dialects.postgresql import insert

    statement = insert(archive_watermarks).values(
        source=source, cleaned_before=watermark, updated_at=sa.func.now()
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[archive_watermarks.c.source],
            set_={"cleaned_before": statement.excluded.cleaned_before, "updated_at": sa.func.now()},
        )
    )


def archive_source(
    warehouse: Warehouse,
    store: ObjectStore,
    source: SourceSpec,
    *,
    run_id: str | None = None,
) -> ArchiveResult:
    """Write the business dates touched since the last archive of `source` to the lake."""
    result = ArchiveResult(source=source.name)
    schema = pa.schema(archived_columns(source))
    clean = clean_table(source)
    watermark = _safe_watermark(warehouse)
    result.watermark = watermark
    connection = warehouse.engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with connection as conn, conn.begin():
        locked = conn.execute(
            sa.select(sa.func.pg_try_advisory_xact_lock(sa.func.hashtext("archive:" + source.name)))
        ).scalar()
        if not locked:
            raise ArchiveError(f"another archive of {source.name} is running; try again later")
        # COPY renders timestamps in the session zone: UTC, read back as UTC instants.
        conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
        conn.execute(sa.text("SET LOCAL DateStyle = 'ISO, YMD'"))
        if not sa.inspect(conn).has_table(source.name, schema=CLEAN_SCHEMA):
            log.info("archive_skipped", source=source.name, reason="no clean table yet")
            return result
        since = conn.execute(
            sa.select(archive_watermarks.c.cleaned_before).where(
                archive_watermarks.c.source == source.name
            )
        ).scalar()
        for day in _candidate_dates(conn, source, clean, since):
            rows = _archive_date(conn, store, source, day, schema)
            if rows == 0:
                # Every row of the date went away (a corrected file): so does its archive.
                _replace_date_objects(store, source.name, day, keep=None)
                conn.execute(
                    sa.delete(archive_dates).where(
                        archive_dates.c.source == source.name,
                        archive_dates.c.business_date == day,
                    )
                )
                result.dates_emptied.append(day)
                continue
            _record_date(conn, source.name, day, rows, watermark, run_id)
            result.dates_archived.append(day)
            result.rows += rows
            result.files += 1
        _advance_watermark(conn, source.name, watermark)
    log.info(
        "archive_written",
        source=source.name,
        dates=len(result.dates_archived),
        emptied=len(result.dates_emptied),
        rows=result.rows,
        watermark=watermark.isoformat(),
    )
    return result


def purge_raw(warehouse: Warehouse, source: SourceSpec) -> int:
    """Delete raw rows past the source's retention whose dates are archived (rule: module doc)."""
    if source.raw_retention_days is None:
        return 0
    clean = clean_table(source)
    with warehouse.begin() as conn:
        inspector = sa.inspect(conn)
        if not inspector.has_table(source.name, schema=RAW_SCHEMA):
            return 0
        if not inspector.has_table(source.name, schema=CLEAN_SCHEMA):
            return 0
        # Only the lineage columns are needed: the raw table's other columns may have grown.
        raw = sa.table(source.name, sa.column(FILE_ID), sa.column(LOADED_AT), schema=RAW_SCHEMA)
        day = business_date(source, clean)
        unarchived_clean_row = (
            sa.select(sa.literal(1))
            .select_from(clean)
            .where(
                clean.c[FILE_ID] == ledger.c.file_id,
                ~sa.exists().where(
                    archive_dates.c.source == source.name,
                    archive_dates.c.business_date == day,
                    archive_dates.c.covers_cleaned_before > clean.c[CLEANED_AT],
                ),
            )
        )
        archived_files = sa.select(ledger.c.file_id).where(
            ledger.c.source == source.name,
            ledger.c.cleaned_at.is_not(None),
            ~unarchived_clean_row.exists(),
        )
        cutoff = sa.func.now() - sa.func.make_interval(0, 0, 0, source.raw_retention_days)
        deleted = conn.execute(
            sa.delete(raw).where(raw.c[LOADED_AT] < cutoff, raw.c[FILE_ID].in_(archived_files))
        ).rowcount
    log.info(
        "raw_retention_applied",
        source=source.name,
        retention_days=source.raw_retention_days,
        rows_deleted=deleted,
    )
    return int(deleted or 0)
