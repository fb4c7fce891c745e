"""The ML assets as Dagster runs them: materialisation metadata (rows, skipped series and why),
the WARN check `no_anomalies` on the KPI, the webhook once per anomalous cell, automation
wiring, and `kpi anomalies` on the command line."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import sqlalchemy as sa

from analytics_pipelines.defs.kpis.names import kpi_asset_key
from analytics_pipelines.defs.ml.factory import (
    AUTOMATION_SENSOR,
    NO_ANOMALIES_CHECK,
    anomalies_asset_key,
    build_ml_definitions,
    forecast_asset_key,
)
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import WarehouseResource
from analytics_pipelines_tests.test_alerts import Receiver, receiver  # noqa: F401 (fixture)
from analytics_pipelines_tests.test_kpi_support import make_catalog
from analytics_pipelines_tests.test_kpi_targets import _write_catalog
from analytics_pipelines_tests.test_ml_support import FIRST_DAY, MlKpi, weekly_values

CLI = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "analytics-pipelines")
DAYS = 42
SPIKES = (30, 36)


def _materialize(kpi: MlKpi, database_url: str) -> dg.ExecuteInProcessResult:
    built = build_ml_definitions(make_catalog([kpi.source], [kpi.kpi]))
    return dg.materialize(
        [dg.AssetSpec(kpi_asset_key(kpi.kpi.name)), *built.assets, *built.checks],
        selection=[forecast_asset_key(kpi.kpi.name), anomalies_asset_key(kpi.kpi.name)],
        resources={"warehouse": WarehouseResource(database_url=database_url)},
    )


def _run_check(kpi: MlKpi, database_url: str) -> dg.AssetCheckEvaluation:
    built = build_ml_definitions(make_catalog([kpi.source], [kpi.kpi]))
    result = dg.materialize(
        [dg.AssetSpec(kpi_asset_key(kpi.kpi.name)), *built.assets, *built.checks],
        selection=dg.AssetSelection.checks(*built.checks),
        resources={"warehouse": WarehouseResource(database_url=database_url)},
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def _spiky_kpi(warehouse: Warehouse) -> MlKpi:
    kpi = MlKpi(warehouse)
    values = weekly_values(DAYS, seed=5)
    for index in SPIKES:
        values[index] += 90
    kpi.set_series("north", values)
    kpi.set_series("south", np.zeros(DAYS))  # all zero: reported, not judged
    return kpi


def _metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, object]:
    (event,) = result.asset_materializations_for_node(key.path[0] + "__" + key.path[1])
    return {name: value.value for name, value in event.metadata.items()}


def test_assets_report_rows_skips_and_alert_once_per_cell(
    warehouse: Warehouse,
    database_url: str,
    receiver: Receiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)
    kpi = _spiky_kpi(warehouse)
    result = _materialize(kpi, database_url)
    assert result.success
    judged = _metadata(result, anomalies_asset_key(kpi.kpi.name))
    forecast = _metadata(result, forecast_asset_key(kpi.kpi.name))
    assert forecast["rows"] == 2 * 7 and forecast["series"] == 2  # north and the total
    # The total's first week ahead, as the UI shows it: the same numbers as the table.
    with warehouse.connect() as conn:
        first = conn.execute(
            sa.text(
                "SELECT period_date, mean FROM kpi.forecast_values WHERE kpi = :kpi "
                "AND dimensions = '{}' ORDER BY period_date LIMIT 1"
            ),
            {"kpi": kpi.kpi.name},
        ).one()
    assert f"| {first.period_date} | {first.mean:.6g} |" in str(forecast["total_preview"])
    assert forecast["skipped_series"] == judged["skipped_series"] == 1
    assert "all zero: 42 day(s)" in str(judged["skipped"])
    assert judged["judged_cells"] == 2 * (DAYS - 14)

    spike_days = {(FIRST_DAY + dt.timedelta(days=i)).isoformat() for i in SPIKES}
    alerted = {(a["period"], a["series"]) for a in receiver.received}
    assert {(day, "region=north") for day in spike_days} <= alerted
    assert {(day, "total") for day in spike_days} <= alerted
    assert len(receiver.received) == len(alerted) == judged["anomalous_cells"]
    assert judged["alerts_sent"] == len(alerted)
    first = next(a for a in receiver.received if a["period"] == min(spike_days))
    assert first["event"] == "kpi_anomaly" and first["direction"] == "above"
    assert first["value"] > first["hi"] > first["expected"]

    # Nothing new: a second run judges nothing and posts nothing.
    again = _materialize(kpi, database_url)
    assert _metadata(again, anomalies_asset_key(kpi.kpi.name))["judged_cells"] == 0
    assert len(receiver.received) == len(alerted)

    # A later correction makes a new anomalous cell: exactly that one is posted; the spikes
    # before it keep their verdicts and are not posted again.
    late = FIRST_DAY + dt.timedelta(days=40)
    kpi.set({"north": {late: 1.0}})
    _materialize(kpi, database_url)
    new = receiver.received[len(alerted) :]
    assert {(a["period"], a["series"], a["direction"]) for a in new} >= {
        (late.isoformat(), "region=north", "below")
    }
    assert all(a["period"] >= late.isoformat() for a in new)

    check = _run_check(kpi, database_url)
    assert check.check_name == NO_ANOMALIES_CHECK
    assert check.asset_key == kpi_asset_key(kpi.kpi.name)
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
    assert f"{late} region=north: 1 below" in (check.description or "")


def test_cli_lists_anomalies_in_a_range(
    warehouse: Warehouse, database_url: str, tmp_path: Path
) -> None:
    kpi = _spiky_kpi(warehouse)
    assert _materialize(kpi, database_url).success
    folder = _write_catalog(tmp_path / "catalog", kpi.source, [kpi.kpi])
    spike = FIRST_DAY + dt.timedelta(days=SPIKES[0])

    def cli(*args: str) -> str:
        done = subprocess.run(
            [CLI, "kpi", "anomalies", kpi.kpi.name, *args],
            env={
                **os.environ,
                "CATALOG_DIR": str(folder),
                "DATABASE_URL": database_url,
                "STORAGE_URL": f"file://{tmp_path}/store",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = json.loads(cli("--from", spike.isoformat(), "--to", spike.isoformat(), "--json"))
    assert {(a["period"], a["series"], a["direction"]) for a in listed} == {
        (spike.isoformat(), "region=north", "above"),
        (spike.isoformat(), "total", "above"),
    }
    north = next(a for a in listed if a["series"] == "region=north")
    values = weekly_values(DAYS, seed=5)
    assert north["value"] == values[SPIKES[0]] + 90
    assert north["deviation"] == pytest.approx(north["value"] - north["expected"])
    table = cli("--from", spike.isoformat(), "--to", spike.isoformat())
    assert "2 anomalous day value(s)" in table.splitlines()[0]
    assert f"{spike}  region=north" in table


def test_a_kpi_refresh_makes_the_automation_request_the_ml_assets(
    warehouse: Warehouse, database_url: str
) -> None:
    kpi = MlKpi(warehouse)
    built = build_ml_definitions(make_catalog([kpi.source], [kpi.kpi]))
    assert built.sensor is not None and built.sensor.name == AUTOMATION_SENSOR
    assert built.sensor.default_status == dg.DefaultSensorStatus.RUNNING
    key = kpi_asset_key(kpi.kpi.name)
    partitions = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)
    defs = dg.Definitions(
        assets=[dg.AssetSpec(key, partitions_def=partitions), *built.assets],
        asset_checks=built.checks,
        resources={"warehouse": WarehouseResource(database_url=database_url)},
    )
    ml_keys = {forecast_asset_key(kpi.kpi.name), anomalies_asset_key(kpi.kpi.name)}
    instance = dg.DagsterInstance.ephemeral()

    def requested(cursor: object) -> tuple[set[dg.AssetKey], object]:
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return {r.key for r in result.results if r.true_subset.size}, result.cursor

    _, cursor = requested(None)
    for day in ("2026-03-02", "2026-03-03"):
        # A refresh of one day of the KPI (most partitions stay unmaterialised): requested.
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=day))
        after, cursor = requested(cursor)
        assert ml_keys <= after, day
        for ml_key in ml_keys:
            instance.report_runless_asset_event(dg.AssetMaterialization(ml_key))
        # Once they ran, nothing is requested until the KPI changes again.
        quiet, cursor = requested(cursor)
        assert not quiet & ml_keys, day
