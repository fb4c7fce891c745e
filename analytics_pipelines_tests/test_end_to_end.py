"""Drop a file, watch the KPIs move: the Dagster daemon, the sensors and real runs, no clicks.

Starts `dagster-daemon` with a temporary DAGSTER_HOME against the test PostgreSQL (a database of
its own) and a temporary local store, drops an orders file into the landing folder, and waits
(bounded) for the KPI table; then drops a corrected version of the same file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from analytics_pipelines.lib.storage import LocalFolderStore
from analytics_pipelines_tests.conftest import PROJECT_ROOT, alembic_config

HEADER = "order_id,line_no,ordered_at,customer_id,region,channel,product_sku,quantity,unit_price,discount,status\n"
DAY = "2026-03-10"
# Berlin midnight of that day, in UTC (winter time, +01:00).
DAY_START_UTC = "2026-03-09 23:00:00+00"
WAIT_SECONDS = 240


def orders_csv(lines: list[tuple[str, str, int, str, str]]) -> bytes:
    rows = [
        f"{order},1,{DAY} {time_},C-{i},{region},web,SKU-1,{qty},{price},0,placed\n"
        for i, (order, time_, qty, price, region) in enumerate(lines)
    ]
    return (HEADER + "".join(rows)).encode()


def gross_revenue(url: str) -> dict[str, Decimal]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT coalesce(dimensions->>'region', 'total') AS region, value"
                    " FROM kpi.kpi_values WHERE kpi = 'gross_revenue' AND grain = 'day'"
                    " AND period_start = CAST(:start AS timestamptz)"
                ),
                {"start": DAY_START_UTC},
            ).all()
    except sa.exc.ProgrammingError:
        return {}
    finally:
        engine.dispose()
    return {region: value for region, value in rows}


def wait_for(
    expected: dict[str, Decimal], url: str, daemon: subprocess.Popen[bytes], log: Path
) -> float:
    started = time.monotonic()
    seen: dict[str, Decimal] = {}
    while time.monotonic() - started < WAIT_SECONDS:
        assert daemon.poll() is None, f"daemon exited:\n{log.read_text()[-4000:]}"
        seen = gross_revenue(url)
        if seen == expected:
            return time.monotonic() - started
        time.sleep(2)
    pytest.fail(
        f"KPI values {seen} != {expected} after {WAIT_SECONDS}s; daemon log:\n{log.read_text()[-6000:]}"
    )


@pytest.fixture
def pipeline_env(
    scratch_database_url: str, postgres_server_url: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    command.upgrade(alembic_config(scratch_database_url), "head")
    store_root = tmp_path / "store"
    store_root.mkdir()
    home = tmp_path / "dagster_home"
    home.mkdir()
    # Dagster's own storage: a second scratch database beside the warehouse one.
    admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    dagster_db = f"{sa.make_url(scratch_database_url).database}_dagster"
    quoted = admin.dialect.identifier_preparer.quote(dagster_db)
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {quoted}"))
    dagster_url = (
        sa.make_url(scratch_database_url)
        .set(database=dagster_db)
        .render_as_string(hide_password=False)
    )
    (home / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_PG_URL\ntelemetry:\n  enabled: false\n"
    )
    env = {
        **os.environ,
        "DATABASE_URL": scratch_database_url,
        "STORAGE_URL": f"file://{store_root}",
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": dagster_url,
        "SENSOR_INTERVAL_SECONDS": "2",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    try:
        yield env
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        admin.dispose()


@pytest.mark.timeout(900)
def test_a_dropped_file_moves_the_kpis_and_a_correction_moves_them_back(
    pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "daemon.log"
    with log.open("wb") as sink:
        daemon = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-daemon"),
                "run",
                "-m",
                "analytics_pipelines.definitions",
            ],
            cwd=tmp_path,
            env=pipeline_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        store = LocalFolderStore(pipeline_env["STORAGE_URL"].removeprefix("file://"))
        store.write(
            "landing/orders/orders_e2e.csv",
            orders_csv(
                [
                    ("ORD-00000001", "10:00:00", 2, "10.50", "north"),
                    ("ORD-00000002", "23:30:00", 1, "4.00", "south"),
                    # 23:30 UTC belongs to the next Berlin day: not in this day's KPI.
                    ("ORD-00000003", "23:30:00+00:00", 5, "1.00", "north"),
                ]
            ),
        )
        wait_for(
            {"total": Decimal("25.00"), "north": Decimal("21.00"), "south": Decimal("4.00")},
            pipeline_env["DATABASE_URL"],
            daemon,
            log,
        )

        store.write(
            "landing/orders/orders_e2e.csv",
            orders_csv([("ORD-00000001", "10:00:00", 1, "10.50", "north")]),
        )
        wait_for(
            {"total": Decimal("10.50"), "north": Decimal("10.50")},
            pipeline_env["DATABASE_URL"],
            daemon,
            log,
        )
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        # The daemon's code server outlives a SIGTERM to the group and would be left running.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGKILL)
