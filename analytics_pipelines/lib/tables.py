"""Table shapes of the warehouse layers, derived from the catalog (the contract between stages)."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from analytics_pipelines.lib.catalog.models import ColumnType, SourceSpec

RAW_SCHEMA = "raw"
CLEAN_SCHEMA = "clean"

FILE_ID = "_file_id"
LINE = "_line"
LOADED_AT = "_loaded_at"
CLEANED_AT = "_cleaned_at"
LINEAGE_COLUMNS = (FILE_ID, LINE)

SQL_TYPES: dict[ColumnType, sa.types.TypeEngine] = {
    "string": sa.Text(),
    "integer": sa.BigInteger(),
    "decimal": sa.Numeric(),
    "boolean": sa.Boolean(),
    "date": sa.Date(),
    "timestamp": sa.DateTime(timezone=True),
}

_metadata = sa.MetaData()

ledger = sa.Table(
    "file_ledger",
    _metadata,
    sa.Column("file_id", sa.BigInteger, primary_key=True),
    sa.Column("source", sa.Text),
    sa.Column("object_key", sa.Text),
    sa.Column("etag", sa.Text),
    sa.Column("content_hash", sa.Text),
    sa.Column("size_bytes", sa.BigInteger),
    sa.Column("modified_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.Text),
    sa.Column("duplicate_of", sa.BigInteger),
    sa.Column("superseded_by", sa.BigInteger),
    sa.Column("row_count", sa.BigInteger),
    sa.Column("clean_rows", sa.BigInteger),
    sa.Column("quarantined_rows", sa.BigInteger),
    sa.Column("replaced_rows", sa.BigInteger),
    sa.Column("business_date_min", sa.Date),
    sa.Column("business_date_max", sa.Date),
    sa.Column("extra_columns", sa.ARRAY(sa.Text)),
    sa.Column("extra_column_headers", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("run_id", sa.Text),
    sa.Column("discovered_at", sa.DateTime(timezone=True)),
    sa.Column("loaded_at", sa.DateTime(timezone=True)),
    sa.Column("cleaned_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    sa.Column("alerted_at", sa.DateTime(timezone=True)),
    sa.Column("retry_requested_at", sa.DateTime(timezone=True)),
    schema="ingest",
)

touched_periods = sa.Table(
    "touched_periods",
    _metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("source", sa.Text),
    sa.Column("file_id", sa.BigInteger),
    sa.Column("slot_start", sa.DateTime(timezone=True)),
    sa.Column("recorded_at", sa.DateTime(timezone=True)),
    schema="ingest",
)

quarantine_rows = sa.Table(
    "rows",
    _metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("source", sa.Text),
    sa.Column("file_id", sa.BigInteger),
    sa.Column("line", sa.BigInteger),
    sa.Column("raw_values", sa.JSON),
    sa.Column("failures", sa.JSON),
    sa.Column("quarantined_at", sa.DateTime(timezone=True)),
    schema="quarantine",
)

kpi_values = sa.Table(
    "kpi_values",
    _metadata,
    sa.Column("kpi", sa.Text, primary_key=True),
    sa.Column("grain", sa.Text, primary_key=True),
    sa.Column("period_start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("period_end", sa.DateTime(timezone=True)),
    sa.Column("dimensions", sa.JSON, primary_key=True),
    sa.Column("value", sa.Numeric),
    sa.Column("computed_at", sa.DateTime(timezone=True)),
    schema="kpi",
)


def raw_table(source: SourceSpec, extra_columns: Iterable[str] = ()) -> sa.Table:
    """`raw.<source>`: every received column as text, plus lineage (file id, line, load time).

    Partitioned by file id: one partition per file version (see `ingest.raw_tables`).
    """
    names = [c.name for c in source.columns] + [
        c for c in extra_columns if c not in source.column_types
    ]
    return sa.Table(
        source.name,
        sa.MetaData(),
        *(sa.Column(name, sa.Text) for name in names),
        sa.Column(FILE_ID, sa.BigInteger, nullable=False),
        sa.Column(LINE, sa.BigInteger, nullable=False),
        sa.Column(
            LOADED_AT, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=RAW_SCHEMA,
        postgresql_partition_by=f"LIST ({FILE_ID})",
    )


def temporary_table(name: str, *columns: sa.Column) -> sa.Table:
    """A transaction-local table (dropped at commit) with these columns."""
    return sa.Table(
        name, sa.MetaData(), *columns, prefixes=["TEMPORARY"], postgresql_on_commit="DROP"
    )


def primary_key_name(source: SourceSpec) -> str:
    """PostgreSQL's own name for the key (`<table>_pkey`), also when the key is added later."""
    return f"{source.name}_pkey"[:63]


def clean_table(source: SourceSpec, *, with_primary_key: bool = True) -> sa.Table:
    """`clean.<source>`: one typed column per declared column, lineage, the primary key enforced."""
    key = (
        [sa.PrimaryKeyConstraint(*source.primary_key, name=primary_key_name(source))]
        if with_primary_key
        else []
    )
    return sa.Table(
        source.name,
        sa.MetaData(),
        *(
            sa.Column(c.name, SQL_TYPES[c.type], nullable=c.name not in source.primary_key)
            for c in source.columns
        ),
        *key,
        sa.Column(FILE_ID, sa.BigInteger, nullable=False),
        sa.Column(LINE, sa.BigInteger, nullable=False),
        sa.Column(
            CLEANED_AT, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=CLEAN_SCHEMA,
    )
