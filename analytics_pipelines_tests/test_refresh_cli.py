"""`analytics-pipelines refresh`, run as a user runs it: pending files are loaded and every KPI of
two time zones is computed over the data's dates, as runs of a Dagster instance.

The values must equal what one run per partition computes, and the day totals a plain Python sum
of the delivered rows.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa

from analytics_pipelines.defs.kpis.names import kpi_asset_key, kpi_partitions
from analytics_pipelines.lib.catalog import load_catalog
from analytics_pipelines.lib.kpi.engine import refresh_kpi
from analytics_pipelines.lib.kpi.plan import plan_kpi
from analytics_pipelines.lib.storage import LocalFolderStore
from analytics_pipelines.lib.tables import kpi_values
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_kpi_cli import write_catalog
from analytics_pipelines_tests.test_kpi_support import make_kpi, make_source, unique

BERLIN = ZoneInfo("Europe/Berlin")
# 23:30 UTC on 28 March is already the (23-hour) DST day 29 March in Berlin.
MOMENTS = [
    dt.datetime(2026, 3, 27, 9, tzinfo=dt.UTC),
    dt.datetime(2026, 3, 28, 23, 30, tzinfo=dt.UTC),
    dt.datetime(2026, 3, 29, 12, tzinfo=dt.UTC),
    dt.datetime(2026, 3, 30, 8, tzinfo=dt.UTC),
]


def _csv(rows: list[tuple[str, dt.datetime, str, int]]) -> bytes:
    lines = ["line_id,at,region,qty"]
    lines += [f"{i},{at.isoformat()},{region},{qty}" for i, at, region, qty in rows]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def project(
    warehouse: Warehouse, database_url: str, local_store: LocalFolderStore, tmp_path: Path
) -> dict[str, Any]:
    source = make_source(unique("refresh"))
    berlin = make_kpi(
        unique("units_berlin"), source.name, measure="sum(qty)", dimensions=["region"],
        grains=["day", "month"], timezone="Europe/Berlin", value_chain="sales",
    )  # fmt: skip
    utc = make_kpi(
        unique("lines_utc"), source.name, measure="count(*)", grains=["day"], timezone="UTC",
        value_chain="ops",
    )  # fmt: skip
    per_line = make_kpi(
        unique("per_line"), None, derived=f"{berlin.name} / 2", grains=["day"],
        timezone="Europe/Berlin", value_chain="ops",
    )  # fmt: skip
    folder = write_catalog(tmp_path / "catalog", [source], [berlin, utc, per_line])
    rows = [(f"l{i}", at, ("north", "south")[i % 2], i + 1) for i, at in enumerate(MOMENTS * 2)]
    local_store.write(f"{source.landing_prefix}march.csv", _csv(rows))
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{local_store.root}",
        "CATALOG_DIR": str(folder),
        "DAGSTER_HOME": str(home),
        "KPI_PARTITIONS_START": "2026-01-01",
    }
    return {
        "source": source,
        "kpis": (berlin, utc, per_line),
        "catalog": folder,
        "rows": rows,
        "env": env,
        "home": home,
    }


def _refresh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "analytics_pipelines.cli", "refresh", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _values(warehouse: Warehouse, kpi: str) -> dict[tuple[str, dt.datetime, str], Decimal]:
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.select(
                kpi_values.c.grain,
                kpi_values.c.period_start,
                sa.cast(kpi_values.c.dimensions, sa.Text()),
                kpi_values.c.value,
            ).where(kpi_values.c.kpi == kpi)
        ).all()
    return {(r[0], r[1], r[2]): r[3] for r in rows}


def test_refresh_loads_and_computes_every_kpi_of_both_zones(
    warehouse: Warehouse, project: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    berlin, utc, per_line = project["kpis"]

    done = _refresh(project["env"])

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout
    assert f"ingest {project['source'].name}: 1 file(s) loaded, 8 row(s)" in out
    # The data's local dates per zone: 27..30 March in Berlin, 27..30 March in UTC.
    assert "kpi Europe/Berlin 2026-03-27..2026-03-30 (4 day(s)), 2 KPI(s): ok" in out
    assert "kpi UTC 2026-03-27..2026-03-30 (4 day(s)), 1 KPI(s): ok" in out

    refreshed = {k.name: _values(warehouse, k.name) for k in project["kpis"]}
    # Plain Python: units per Berlin day, lines per UTC day.
    units = Counter[dt.date]()
    lines = Counter[dt.date]()
    for _, at, _, qty in project["rows"]:
        units[at.astimezone(BERLIN).date()] += qty
        lines[at.date()] += 1
    berlin_days = {
        p.astimezone(BERLIN).date(): v
        for (grain, p, dims), v in refreshed[berlin.name].items()
        if grain == "day" and dims == "{}"
    }
    assert berlin_days == {day: Decimal(n) for day, n in units.items()}
    utc_days = {p.astimezone(dt.UTC).date(): v for (grain, p, _), v in refreshed[utc.name].items()}
    assert utc_days == {day: Decimal(n) for day, n in lines.items()}
    # The derived KPI has a cell on each Berlin day with data (28 March has none in Berlin).
    assert sorted(p.astimezone(BERLIN).date() for _, p, _ in refreshed[per_line.name]) == sorted(
        units
    )

    # One run per partition computes the same values.
    catalog = load_catalog(project["catalog"])
    for kpi in (berlin, utc, per_line):
        for day in sorted(units | lines):
            refresh_kpi(warehouse, plan_kpi(catalog, kpi.name), day, day)
    assert {k.name: _values(warehouse, k.name) for k in project["kpis"]} == refreshed

    # The runs are the instance's: the UI of that DAGSTER_HOME lists them.
    monkeypatch.setenv("DAGSTER_HOME", str(project["home"]))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
    assert {r.job_name for r in runs} == {
        f"ingest_{project['source'].name}",
        "kpi_refresh_europe_berlin",
        "kpi_refresh_utc",
    }
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)

    # Nothing pending now: a second refresh loads no file and recomputes the same values.
    again = _refresh(project["env"], "--value-chain", "ops")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 file(s) loaded" in again.stdout
    # `ops` holds the UTC count and the derived KPI, whose Berlin input comes along.
    assert "kpi Europe/Berlin 2026-03-27..2026-03-30 (4 day(s)), 2 KPI(s): ok" in again.stdout


def test_refresh_explains_a_wrong_selection(project: dict[str, Any]) -> None:
    done = _refresh(project["env"], "--kpi", "no_such_kpi", "--no-ingest")
    assert done.returncode == 2
    assert "unknown KPI 'no_such_kpi'" in done.stderr
    done = _refresh(project["env"], "--from", "2026-03-30", "--to", "2026-03-01")
    assert done.returncode == 2
    assert "--from 2026-03-30 is after --to 2026-03-01" in done.stderr


def test_refresh_of_the_demo_catalog_skips_the_reference_when_dating_the_data(
    project: dict[str, Any],
) -> None:
    """The demo catalog has a reference source (customers), which has no dates of its own.

    Other tests of the session may have left demo tables behind: either outcome is a line for
    the zone, never a traceback."""
    env = {k: v for k, v in project["env"].items() if k != "CATALOG_DIR"}
    done = _refresh(env, "--no-ingest", "--value-chain", "sales")
    assert "Traceback" not in done.stderr, done.stderr
    assert any(line.startswith("kpi Europe/Berlin") for line in done.stdout.splitlines())


def test_a_refused_refresh_keeps_the_values_and_what_the_ui_shows_of_them(
    warehouse: Warehouse, project: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery of nothing but bad rows blocks its source: the refresh says so and exits 1; the
    stored values and the partitions' status (materialised, neither failed nor in progress)
    stay those of the last good refresh."""
    berlin, utc, _ = project["kpis"]
    first = _refresh(project["env"])
    assert first.returncode == 0, first.stdout + first.stderr
    before = {k.name: _values(warehouse, k.name) for k in project["kpis"]}
    bad = [(f"bad{i}", MOMENTS[0], "north", 0) for i in range(20)]
    body = _csv(bad).replace(b",north,0\n", b",north,not-a-number\n")
    LocalFolderStore(Path(project["env"]["STORAGE_URL"].removeprefix("file://"))).write(
        f"{project['source'].landing_prefix}bad.csv", body
    )

    done = _refresh(project["env"])

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "kpi Europe/Berlin 2026-03-27..2026-03-30 (4 day(s)), 2 KPI(s): FAILED" in done.stdout
    assert f"kpi {berlin.name} not refreshed" in done.stdout
    assert {k.name: _values(warehouse, k.name) for k in project["kpis"]} == before
    monkeypatch.setenv("DAGSTER_HOME", str(project["home"]))
    days = [f"2026-03-{d}" for d in (27, 28, 29, 30)]
    with dg.DagsterInstance.get() as instance:
        for kpi in (berlin, utc):
            status = instance.get_status_by_partition(
                kpi_asset_key(kpi.name), days, kpi_partitions(kpi.timezone, "2026-01-01")
            )
            assert status == dict.fromkeys(days, dg.AssetPartitionStatus.MATERIALIZED), kpi.name
