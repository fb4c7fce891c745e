"""The BI role reads KPI values and views, and nothing that can hold personal data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from analytics_pipelines_tests.conftest import alembic_config

BI_ROLE = "analytics_bi"


@pytest.fixture
def bi_login(database_url: str) -> Iterator[str]:
    """A temporary login granted the BI role; the throwaway server trusts it without a password."""
    name = f"bi_user_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE \"{name}\" LOGIN PASSWORD 'not-used' IN ROLE {BI_ROLE}"))
    try:
        yield (
            sa.make_url(database_url)
            .set(username=name, password=None)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def private_tables(database_url: str) -> Iterator[dict[str, str]]:
    """One table with a row in each private schema, one KPI value and one KPI view made after migration."""
    tag = uuid.uuid4().hex[:8]
    names = {
        "raw": f"raw.bi_probe_{tag}",
        "clean": f"clean.bi_probe_{tag}",
        "ingest": "ingest.file_ledger",
        "quarantine": "quarantine.rows",
        "view": f"kpi.bi_view_{tag}",
        "kpi": f"bi_probe_{tag}",
    }
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        for schema in ("raw", "clean"):
            conn.execute(sa.text(f"CREATE TABLE {names[schema]} (customer_email text)"))
            conn.execute(sa.text(f"INSERT INTO {names[schema]} VALUES ('someone@example.com')"))
        conn.execute(
            sa.text(
                "INSERT INTO kpi.kpi_values (kpi, grain, period_start, period_end, dimensions, value)"
                " VALUES (:kpi, 'day', '2024-05-01T00:00Z', '2024-05-02T00:00Z', '{}', 42)"
            ),
            {"kpi": names["kpi"]},
        )
        # Created after the migration ran: readable only through the default privileges.
        conn.execute(
            sa.text(
                f"CREATE VIEW {names['view']} AS SELECT kpi, value FROM kpi.kpi_values"
                f" WHERE kpi = '{names['kpi']}'"
            )
        )
    try:
        yield names
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP VIEW IF EXISTS {names['view']}"))
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {names['raw']}, {names['clean']}"))
            conn.execute(
                sa.text("DELETE FROM kpi.kpi_values WHERE kpi = :kpi"), {"kpi": names["kpi"]}
            )
        engine.dispose()


def _denied(engine: sa.Engine, statement: str) -> str:
    with pytest.raises(sa.exc.ProgrammingError) as caught, engine.connect() as conn:
        conn.execute(sa.text(statement))
    return str(caught.value.orig)


def test_bi_login_reads_kpis_and_nothing_private(
    bi_login: str, private_tables: dict[str, str]
) -> None:
    engine = sa.create_engine(bi_login)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_user")).scalar() != "postgres"
            value = conn.execute(
                sa.text("SELECT value FROM kpi.kpi_values WHERE kpi = :kpi"),
                {"kpi": private_tables["kpi"]},
            ).scalar()
            assert value == 42
            view_rows = conn.execute(sa.text(f"SELECT value FROM {private_tables['view']}")).all()
            assert [row.value for row in view_rows] == [42]

        for schema in ("raw", "clean", "quarantine", "ingest"):
            message = _denied(engine, f"SELECT * FROM {private_tables[schema]}")
            assert f"permission denied for schema {schema}" in message

        assert "permission denied" in _denied(engine, "CREATE TABLE public.bi_was_here (x int)")
        assert "permission denied" in _denied(engine, "CREATE TABLE kpi.bi_was_here (x int)")
        assert "permission denied" in _denied(
            engine, f"DELETE FROM kpi.kpi_values WHERE kpi = '{private_tables['kpi']}'"
        )
    finally:
        engine.dispose()


def test_bi_role_is_a_group_role_without_login(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            role = conn.execute(
                sa.text(
                    "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb"
                    " FROM pg_roles WHERE rolname = :role"
                ),
                {"role": BI_ROLE},
            ).one()
        assert tuple(role) == (False, False, False, False)
    finally:
        engine.dispose()


def _privileges(url: str) -> dict[str, bool]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return dict(
                conn.execute(
                    sa.text(
                        "SELECT"
                        " has_schema_privilege(:role, 'kpi', 'USAGE') AS kpi_usage,"
                        " has_table_privilege(:role, 'kpi.kpi_values', 'SELECT') AS kpi_select,"
                        " EXISTS (SELECT FROM pg_default_acl d JOIN pg_namespace n"
                        "   ON n.oid = d.defaclnamespace WHERE n.nspname = 'kpi'"
                        "   AND array_to_string(d.defaclacl, ',') LIKE :pattern) AS future_views"
                    ),
                    {"role": BI_ROLE, "pattern": f"%{BI_ROLE}=r/%"},
                )
                .one()
                ._mapping
            )
    finally:
        engine.dispose()


def test_upgrade_and_downgrade_twice_in_a_row(database_url: str, scratch_database_url: str) -> None:
    # database_url first: another database of the cluster holds grants, as in a real cluster
    # where the role outlives one database. The downgrade must then keep the role, not fail.
    config = alembic_config(scratch_database_url)
    previous = ScriptDirectory.from_config(config).get_revision("0004").down_revision
    assert isinstance(previous, str)

    for _ in range(2):
        command.upgrade(config, "head")
        assert _privileges(scratch_database_url) == {
            "kpi_usage": True,
            "kpi_select": True,
            "future_views": True,
        }
        command.downgrade(config, previous)
        engine = sa.create_engine(scratch_database_url)
        try:
            with engine.connect() as conn:
                assert (
                    conn.execute(
                        sa.text("SELECT has_schema_privilege(:r, 'kpi', 'USAGE')"), {"r": BI_ROLE}
                    ).scalar()
                    is False
                )
                assert (
                    conn.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_default_acl d JOIN pg_namespace n"
                            " ON n.oid = d.defaclnamespace WHERE n.nspname = 'kpi'"
                        )
                    ).scalar()
                    == 0
                )
                assert not sa.inspect(conn).has_table("archive_dates", schema="ingest")
        finally:
            engine.dispose()

    command.upgrade(config, "head")
    assert _privileges(scratch_database_url)["kpi_select"] is True


def test_a_migration_user_without_createrole_is_told_what_to_do() -> None:
    # Needs a cluster where the role does not exist yet: a server of its own.
    import shutil

    from analytics_pipelines.lib.pgserver import LocalPostgres, PostgresUnavailable, free_port
    from analytics_pipelines.lib.settings import normalise_database_url
    from analytics_pipelines_tests.conftest import world_readable_tempdir

    folder = world_readable_tempdir("ap-pg-role-")
    server = LocalPostgres(folder / "data", free_port(), durable=False)
    try:
        try:
            admin_url = normalise_database_url(server.start())
        except PostgresUnavailable as error:
            pytest.skip(f"no local PostgreSQL binaries: {error}")
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE ROLE pipeline_user LOGIN"))
            conn.execute(sa.text("CREATE DATABASE pipeline_db OWNER pipeline_user"))
        weak_url = (
            sa.make_url(admin_url)
            .set(username="pipeline_user", database="pipeline_db")
            .render_as_string(hide_password=False)
        )
        with pytest.raises(RuntimeError, match="lacks CREATEROLE") as caught:
            command.upgrade(alembic_config(weak_url), "head")
        assert "CREATE ROLE analytics_bi NOLOGIN" in str(caught.value)

        # A DBA creates the role once; the same user then migrates without CREATEROLE.
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE ROLE analytics_bi NOLOGIN"))
        command.upgrade(alembic_config(weak_url), "head")
        weak = sa.create_engine(weak_url)
        with weak.connect() as conn:
            assert conn.execute(
                sa.text("SELECT has_table_privilege('analytics_bi', 'kpi.kpi_values', 'SELECT')")
            ).scalar()
        weak.dispose()
        admin.dispose()
    finally:
        server.destroy()
        shutil.rmtree(folder, ignore_errors=True)
