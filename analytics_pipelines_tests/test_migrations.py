"""Alembic migrations run up, down and up again on a real database; a down database gets one message."""

from __future__ import annotations

import os
import subprocess
import sys

import sqlalchemy as sa
from alembic import command

from analytics_pipelines.lib.pgserver import free_port
from analytics_pipelines_tests.conftest import PROJECT_ROOT, alembic_config

SYSTEM_TABLES = {
    ("ingest", "file_ledger"),
    ("ingest", "touched_periods"),
    ("quarantine", "rows"),
    ("kpi", "kpi_values"),
}


def _tables(url: str) -> set[tuple[str, str]]:
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        return {
            (schema, table)
            for schema in inspector.get_schema_names()
            if schema in {"ingest", "raw", "clean", "quarantine", "kpi"}
            for table in inspector.get_table_names(schema=schema)
        }
    finally:
        engine.dispose()


def _schemas(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_schema_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(scratch_database_url: str) -> None:
    config = alembic_config(scratch_database_url)
    command.upgrade(config, "head")
    assert SYSTEM_TABLES <= _tables(scratch_database_url)
    assert {"ingest", "raw", "clean", "quarantine", "kpi"} <= _schemas(scratch_database_url)
    command.downgrade(config, "base")
    assert _tables(scratch_database_url) == set()
    assert not {"ingest", "raw", "clean", "quarantine", "kpi"} & _schemas(scratch_database_url)
    command.upgrade(config, "head")
    assert SYSTEM_TABLES <= _tables(scratch_database_url)


def test_migrating_a_database_that_is_down_says_so() -> None:
    env = {**os.environ, "DATABASE_URL": f"postgresql://u:secret@127.0.0.1:{free_port()}/x"}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot migrate: database unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    assert "secret" not in result.stderr
