"""Schemas of the warehouse layers and the system tables: file ledger, touched periods, quarantine, KPI values.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMAS = ("ingest", "raw", "clean", "quarantine", "kpi")
STATUSES = ("loading", "loaded", "duplicate", "failed", "superseded")
GRAINS = ("hour", "day", "week", "month", "quarter", "year")


def upgrade() -> None:
    for schema in SCHEMAS:
        op.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
    op.create_table(
        "file_ledger",
        sa.Column("file_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("object_key", sa.Text, nullable=False),
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("content_hash", sa.Text, nullable=True, comment="MD5 of the bytes as read"),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column(
            "duplicate_of",
            sa.BigInteger,
            sa.ForeignKey("ingest.file_ledger.file_id"),
            nullable=True,
        ),
        sa.Column(
            "superseded_by",
            sa.BigInteger,
            sa.ForeignKey("ingest.file_ledger.file_id"),
            nullable=True,
        ),
        sa.Column("row_count", sa.BigInteger, nullable=True, comment="rows written to raw"),
        sa.Column("clean_rows", sa.BigInteger, nullable=True),
        sa.Column("quarantined_rows", sa.BigInteger, nullable=True),
        sa.Column(
            "replaced_rows",
            sa.BigInteger,
            nullable=True,
            comment="rows lost to a later duplicate key",
        ),
        sa.Column("business_date_min", sa.Date, nullable=True),
        sa.Column("business_date_max", sa.Date, nullable=True),
        sa.Column("extra_columns", postgresql.ARRAY(sa.Text), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("run_id", sa.Text, nullable=True),
        sa.Column(
            "discovered_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cleaned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(sa.column("status").in_(STATUSES), name="file_ledger_status_known"),
        sa.UniqueConstraint("source", "object_key", "etag", name="file_ledger_version_once"),
        schema="ingest",
    )
    op.create_index(
        "file_ledger_source_status", "file_ledger", ["source", "status"], schema="ingest"
    )
    op.create_index(
        "file_ledger_content", "file_ledger", ["source", "content_hash"], schema="ingest"
    )

    # Which 15-minute UTC slots of business time each cleaned file version touched: any KPI time
    # zone's periods (whole, half and quarter hour offsets) are unions of such slots.
    op.create_table(
        "touched_periods",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column(
            "file_id", sa.BigInteger, sa.ForeignKey("ingest.file_ledger.file_id"), nullable=False
        ),
        sa.Column("slot_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema="ingest",
    )
    op.create_index(
        "touched_periods_source_id", "touched_periods", ["source", "id"], schema="ingest"
    )

    op.create_table(
        "rows",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column(
            "file_id", sa.BigInteger, sa.ForeignKey("ingest.file_ledger.file_id"), nullable=False
        ),
        sa.Column("line", sa.BigInteger, nullable=False),
        sa.Column("raw_values", postgresql.JSONB, nullable=False),
        sa.Column(
            "failures", postgresql.JSONB, nullable=False, comment="[{column, rule, message}, ...]"
        ),
        sa.Column(
            "quarantined_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.UniqueConstraint("source", "file_id", "line", name="quarantine_row_once"),
        schema="quarantine",
    )

    op.create_table(
        "kpi_values",
        sa.Column("kpi", sa.Text, nullable=False),
        sa.Column("grain", sa.Text, nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "dimensions",
            postgresql.JSONB,
            nullable=False,
            comment="{} is the total across dimensions",
        ),
        sa.Column("value", sa.Numeric, nullable=True),
        sa.Column(
            "computed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("kpi", "grain", "period_start", "dimensions", name="kpi_values_pk"),
        sa.CheckConstraint(sa.column("grain").in_(GRAINS), name="kpi_values_grain_known"),
        schema="kpi",
    )


def downgrade() -> None:
    op.drop_table("kpi_values", schema="kpi")
    op.drop_table("rows", schema="quarantine")
    op.drop_table("touched_periods", schema="ingest")
    op.drop_table("file_ledger", schema="ingest")
    # Per-source raw/clean tables live in these schemas too; they go with them on a full downgrade.
    for schema in reversed(SCHEMAS):
        op.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
