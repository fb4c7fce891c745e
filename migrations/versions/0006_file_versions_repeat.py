"""File versions may repeat; the ledger remembers extra headers, alerts and retry requests.

* `file_ledger_version_once` goes: a key delivered with content A, then B, then A again is
  three versions, and the third must make A current again (a rollback). Which version of a key
  is current is now "the newest row of that key" (index `file_ledger_key_newest`).
* `extra_column_headers`: for every extra column a file added to `raw.<source>`, the header
  text as the file spelled it, next to the column name it was given ({"column": "Header"}).
* `alerted_at`: when the failure alert for a failed version was sent (once per version).
* `retry_requested_at`: an operator asked to load a failed version again
  (`analytics-pipelines files retry`); the next load attempt treats it as new.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "ingest"
TABLE = "file_ledger"


def upgrade() -> None:
    op.drop_constraint("file_ledger_version_once", TABLE, schema=SCHEMA, type_="unique")
    op.create_index(
        "file_ledger_key_newest",
        TABLE,
        ["source", "object_key", sa.text("file_id DESC")],
        schema=SCHEMA,
    )
    op.add_column(
        TABLE,
        sa.Column(
            "extra_column_headers",
            postgresql.JSONB,
            nullable=True,
            comment="extra column name -> header text as the file spelled it",
        ),
        schema=SCHEMA,
    )
    op.add_column(TABLE, sa.Column("alerted_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.add_column(TABLE, sa.Column("retry_requested_at", sa.DateTime(timezone=True)), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column(TABLE, "retry_requested_at", schema=SCHEMA)
    op.drop_column(TABLE, "alerted_at", schema=SCHEMA)
    op.drop_column(TABLE, "extra_column_headers", schema=SCHEMA)
    op.drop_index("file_ledger_key_newest", TABLE, schema=SCHEMA)
    # Ledger rows are never deleted: a ledger with a repeated version cannot go back.
    repeated = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT count(*) FROM (SELECT 1 FROM ingest.file_ledger"
                " GROUP BY source, object_key, etag HAVING count(*) > 1) AS r"
            )
        )
        .scalar_one()
    )
    if repeated:
        raise RuntimeError(
            f"cannot downgrade below 0006: {repeated} (source, key, content) versions were "
            "delivered more than once (rollbacks or retries); the old unique constraint forbids that"
        )
    op.create_unique_constraint(
        "file_ledger_version_once", TABLE, ["source", "object_key", "etag"], schema=SCHEMA
    )
