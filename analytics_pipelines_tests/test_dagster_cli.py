"""The pipeline from the command line, as an operator (or CI) runs it: `dagster asset materialize`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from analytics_pipelines.lib.catalog import load_catalog
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR
from analytics_pipelines_tests.conftest import PROJECT_ROOT, alembic_config

BIN = Path(sys.executable).parent
DAY = "2026-01-06"


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}"
    )
    return result


@pytest.mark.timeout(1200)
def test_demo_pipeline_materialises_from_the_dagster_cli(
    scratch_database_url: str, tmp_path: Path
) -> None:
    command.upgrade(alembic_config(scratch_database_url), "head")
    store = tmp_path / "store"
    store.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": scratch_database_url,
        "STORAGE_URL": f"file://{store}",
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    run(
        [
            str(BIN / "analytics-pipelines"),
            "demo",
            "generate",
            "--rows",
            "600",
            "--days",
            "3",
            "--seed",
            "7",
        ],
        env,
        tmp_path,
    )
    catalog = load_catalog(DEMO_CATALOG_DIR)
    layers = ",".join(f"raw/raw_{source},clean/{source}" for source in catalog.sources)
    module = ["-m", "analytics_pipelines.definitions"]
    run([str(BIN / "dagster"), "asset", "materialize", *module, "--select", layers], env, tmp_path)

    by_zone: dict[str, list[str]] = {}
    for kpi in catalog.kpis.values():
        by_zone.setdefault(kpi.timezone, []).append(f"kpi/{kpi.name}")
    for keys in by_zone.values():
        run(
            [
                str(BIN / "dagster"),
                "asset",
                "materialize",
                *module,
                "--select",
                ",".join(keys),
                "--partition",
                DAY,
            ],
            env,
            tmp_path,
        )

    engine = sa.create_engine(scratch_database_url)
    with engine.connect() as conn:
        loaded = conn.execute(
            sa.text("SELECT count(*) FROM ingest.file_ledger WHERE status = 'loaded'")
        ).scalar()
        kpis_with_values = conn.execute(
            sa.text("SELECT count(DISTINCT kpi) FROM kpi.kpi_values WHERE grain = 'day'")
        ).scalar()
        orders = conn.execute(sa.text("SELECT count(*) FROM clean.orders")).scalar()
    engine.dispose()
    assert loaded == 3 * len(catalog.sources)  # three days, one file per day and source
    assert orders and orders > 0
    assert kpis_with_values == len(catalog.kpis)
