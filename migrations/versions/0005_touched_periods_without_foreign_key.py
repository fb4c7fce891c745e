"""`ingest.touched_periods` without its foreign key to the file ledger.

A file spanning a year of business time touches ~35,000 fifteen-minute slots, one row each, and
PostgreSQL checks a foreign key with one query per inserted row: recording the slots of such a
file cost about as much as building its clean table's primary key. Both writers (the clean
stage and the clean-while-loading path) insert a file's slots in the transaction that records
that file as cleaned in the ledger, and ledger rows are never deleted, so the reference holds by
construction.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSTRAINT = "touched_periods_file_id_fkey"


def upgrade() -> None:
    op.drop_constraint(CONSTRAINT, "touched_periods", schema="ingest", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key(
        CONSTRAINT,
        "touched_periods",
        "file_ledger",
        ["file_id"],
        ["file_id"],
        source_schema="ingest",
        referent_schema="ingest",
    )
