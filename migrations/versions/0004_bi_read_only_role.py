"""Read-only role for BI tools (`analytics_bi`) and the archive's bookkeeping tables.

`analytics_bi` is a NOLOGIN group role that can read the `kpi` schema (tables and views, present
and future) and nothing else: raw, clean and quarantine can hold personal data.

Privileges of the migration user: creating the role needs CREATEROLE (or superuser). Where the
migration user may not create roles, a DBA creates the role once per cluster:

    CREATE ROLE analytics_bi NOLOGIN;

and this migration then only grants (it logs that it skipped the creation). The pipelines
themselves never need a superuser.

A person or BI tool logs in with its own role that is a member of the group role:

    CREATE ROLE metabase LOGIN PASSWORD '...' IN ROLE analytics_bi;
    -- or, for an existing login:  GRANT analytics_bi TO metabase;

Future KPI views are readable because of `ALTER DEFAULT PRIVILEGES`, which applies to objects
created by the role that runs this migration; if the pipelines create views as another role, run
`ALTER DEFAULT PRIVILEGES FOR ROLE <that role> IN SCHEMA kpi GRANT SELECT ON TABLES TO analytics_bi`.

A role belongs to the whole cluster, a grant to one database: the downgrade revokes this database's
grants and drops the role only when no other database of the cluster still grants it anything.

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BI_ROLE = "analytics_bi"
READABLE_SCHEMA = "kpi"
PRIVATE_SCHEMAS = ("raw", "clean", "quarantine", "ingest")

log = logging.getLogger("alembic.runtime.migration")


def _role_exists() -> bool:
    bind = op.get_bind()
    return bool(
        bind.execute(
            sa.text("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = :role)"), {"role": BI_ROLE}
        ).scalar()
    )


def _may_create_roles() -> bool:
    bind = op.get_bind()
    return bool(
        bind.execute(
            sa.text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
        ).scalar()
    )


def _create_role() -> None:
    if _role_exists():
        log.info(
            "role %s exists already (created by a DBA or another database): skipping creation",
            BI_ROLE,
        )
        return
    if not _may_create_roles():
        user = op.get_bind().execute(sa.text("SELECT current_user")).scalar()
        raise RuntimeError(
            f"cannot create role {BI_ROLE}: the migration user {user!r} lacks CREATEROLE. "
            f"Either grant it (ALTER ROLE {user} CREATEROLE) or have a DBA run "
            f"'CREATE ROLE {BI_ROLE} NOLOGIN;' once, then run the migration again."
        )
    # Guarded again inside the server: another database of the cluster may create it meanwhile.
    op.execute(
        """
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analytics_bi') THEN
                CREATE ROLE analytics_bi NOLOGIN;
            END IF;
        END
        $$
        """
    )
    log.info("created role %s (NOLOGIN)", BI_ROLE)


def _grant() -> None:
    op.execute(f"GRANT USAGE ON SCHEMA {READABLE_SCHEMA} TO {BI_ROLE}")
    op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {READABLE_SCHEMA} TO {BI_ROLE}")
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {READABLE_SCHEMA} GRANT SELECT ON TABLES TO {BI_ROLE}"
    )
    # Explicit, so a grant made by hand earlier does not survive an upgrade unnoticed.
    for schema in PRIVATE_SCHEMAS:
        op.execute(f"REVOKE ALL ON SCHEMA {schema} FROM {BI_ROLE}")
        op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {BI_ROLE}")
    op.execute(f"REVOKE CREATE ON SCHEMA public FROM {BI_ROLE}")


def _create_archive_tables() -> None:
    # One row per archived business date: what retention checks before deleting raw rows.
    op.create_table(
        "archive_dates",
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("business_date", sa.Date, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("object_key", sa.Text, nullable=False),
        sa.Column(
            "covers_cleaned_before",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="every clean row of the date cleaned before this instant is in the file",
        ),
        sa.Column(
            "archived_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("run_id", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("source", "business_date", name="archive_dates_pk"),
        schema="ingest",
    )
    # Per source: clean rows cleaned before `cleaned_before` have been looked at by an archive run.
    op.create_table(
        "archive_watermarks",
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("cleaned_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema="ingest",
    )


def upgrade() -> None:
    _create_archive_tables()
    _create_role()
    _grant()


def downgrade() -> None:
    op.drop_table("archive_watermarks", schema="ingest")
    op.drop_table("archive_dates", schema="ingest")
    # Revoke this database's grants, then drop the role unless another database still uses it.
    # Literal names: PL/pgSQL text is not built from variables.
    op.execute(
        """
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analytics_bi') THEN
                RAISE NOTICE 'role analytics_bi does not exist: nothing to revoke';
                RETURN;
            END IF;
            ALTER DEFAULT PRIVILEGES IN SCHEMA kpi
                REVOKE SELECT ON TABLES FROM analytics_bi;
            REVOKE ALL ON ALL TABLES IN SCHEMA kpi FROM analytics_bi;
            REVOKE ALL ON SCHEMA kpi FROM analytics_bi;
            BEGIN
                DROP ROLE IF EXISTS analytics_bi;
            EXCEPTION
                WHEN dependent_objects_still_exist THEN
                    RAISE NOTICE 'role analytics_bi kept: another database of the cluster grants it privileges';
                WHEN insufficient_privilege THEN
                    RAISE NOTICE 'role analytics_bi kept: the migration user may not drop roles';
            END;
        END
        $$
        """
    )
