"""Dagster definitions of the ML on KPIs (lib/ml), built from the catalog: per KPI that declares
them, the assets `forecast/forecast_<kpi>` and `anomalies/anomalies_<kpi>` downstream of `kpi/<kpi>`, the WARN check
`no_anomalies` on the KPI, and one automation sensor that runs them after the KPI's refreshes.

* The assets are not partitioned: each run models the KPI's whole day history (complete local
  days only), so a run after any refresh, ranged backfills and corrections included, brings
  forecasts and verdicts up to date.
* Their automation condition is `eager` without its "no missing dependency" part: a daily KPI
  always has unmaterialised partitions (before its data starts), which would hold `eager` for
  ever. They run when a partition of the KPI was updated since they last ran, once no run of
  the KPI is in progress.
* `ml_automation_sensor` evaluates those conditions and starts RUNNING (Dagster's default
  automation sensor starts stopped, which would leave `make dev` without forecasts).
"""

import datetime as dt
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import dagster as dg

from analytics_pipelines.defs import run_priority
from analytics_pipelines.defs.kpis.names import kpi_asset_key
from analytics_pipelines.lib.catalog import Catalog, KpiSpec, load_catalog_cached
from analytics_pipelines.lib.kpi.periods import local_date
from analytics_pipelines.lib.settings import SettingsError, get_settings
from analytics_pipelines.lib.warehouse import dbapi_connection
from analytics_pipelines.resources import WarehouseResource

NO_ANOMALIES_CHECK = "no_anomalies"
AUTOMATION_SENSOR = "ml_automation_sensor"
# Forecasts and verdicts follow a KPI's refresh within a minute, whatever the landing sensors'
# pace: evaluated every 2 s (make dev), they refit after every single delivery and take the
# cores the next delivery's KPIs need (a dropped file's KPIs went from 13.5 s to 20.8 s).
MIN_INTERVAL_SECONDS = 60
# The check looks at the verdicts of this many days up to the latest judged one.
CHECK_DAYS = 7
SKIPPED_SHOWN = 20

AFTER_KPI_REFRESH = (
    (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated())
    .since_last_handled()
    .with_label("after the KPI's refresh")
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
)


# The last part names the node in the lineage graph, which must be unique (as raw/raw_<source>).
def forecast_asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["forecast", f"forecast_{name}"])


def anomalies_asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["anomalies", f"anomalies_{name}"])


def _today(kpi: KpiSpec) -> dt.date:
    return local_date(dt.datetime.now(dt.UTC), kpi.timezone)


def _skipped_markdown(skipped: dict[str, str]) -> str:
    from analytics_pipelines.lib.ml.series import series_label

    lines = ["| series | why skipped |", "|---|---|"]
    for key, why in sorted(skipped.items())[:SKIPPED_SHOWN]:
        lines.append(f"| {series_label(key)} | {why} |")
    if len(skipped) > SKIPPED_SHOWN:
        lines.append(f"| … | {len(skipped) - SKIPPED_SHOWN} more |")
    return "\n".join(lines)


def _skipped_metadata(skipped: dict[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"skipped_series": len(skipped)}
    if skipped:
        metadata["skipped"] = dg.MetadataValue.md(_skipped_markdown(skipped))
    return metadata


# A refit run started by the automation sensor gives way to every other process on the machine:
# its tens of seconds of model fitting then never delay a delivery's load or KPI refresh.
BACKGROUND_NICENESS = 10


def _yield_the_cores_if_background(context: dg.AssetExecutionContext) -> None:
    """Lower this run's CPU priority when it is a background refit (its own process)."""
    tag = run_priority.PRIORITY_TAG
    if context.run.tags.get(tag) == run_priority.ML_REFIT[tag] and os.nice(0) < BACKGROUND_NICENESS:
        os.nice(BACKGROUND_NICENESS - os.nice(0))


def _follows_the_kpi(kpi: KpiSpec) -> dict[str, Any]:
    """What a forecast and an anomalies asset share: the KPI's group, its key as the one
    dependency, the automation that runs them after its refreshes."""
    return {
        "group_name": kpi.value_chain,
        "kinds": {"postgres", "python"},
        "deps": [kpi_asset_key(kpi.name)],
        "automation_condition": AFTER_KPI_REFRESH,
        "tags": {"value_chain": kpi.value_chain},
    }


def build_forecast_asset(kpi: KpiSpec) -> dg.AssetsDefinition:
    spec = kpi.forecast
    assert spec is not None

    @dg.asset(
        key=forecast_asset_key(kpi.name),
        description=(
            f"{kpi.name}: the next {spec.horizon_days} days per dimension value and the total, "
            "with 80 % and 95 % prediction intervals (statsforecast)."
        ),
        metadata={"table": "kpi.forecast_values", "view": "kpi.forecasts"},
        **_follows_the_kpi(kpi),
    )
    def _forecast(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        _yield_the_cores_if_background(context)
        from analytics_pipelines.lib.ml.forecast import forecast_kpi

        with warehouse.get_warehouse().begin() as conn:
            result = forecast_kpi(dbapi_connection(conn), kpi, _today(kpi))
        if result.skipped:
            context.log.warning(
                f"{kpi.name}: {len(result.skipped)} series not forecast (see `skipped`)"
            )
        preview = ["| day | forecast | 80 % | 95 % |", "|---|---|---|---|"] + [
            f"| {day} | {mean:.6g} | {lo80:.6g} .. {hi80:.6g} | {lo95:.6g} .. {hi95:.6g} |"
            for day, mean, lo80, hi80, lo95, hi95 in result.total_preview
        ]
        return dg.MaterializeResult(
            metadata={
                "rows": result.rows,
                "series": result.series,
                "horizon_days": spec.horizon_days,
                "total_preview": dg.MetadataValue.md(
                    "\n".join(preview) if result.total_preview else "_no total forecast_"
                ),
                "models": ", ".join(f"{m}: {n}" for m, n in sorted(result.models.items())),
                **_skipped_metadata(result.skipped),
            }
        )

    return _forecast


def build_anomalies_asset(kpi: KpiSpec) -> dg.AssetsDefinition:
    spec = kpi.anomalies
    assert spec is not None

    @dg.asset(
        key=anomalies_asset_key(kpi.name),
        description=(
            f"{kpi.name}: every new or recomputed day value judged against a model fitted on "
            f"the days before it ({spec.interval_level:g} % prediction interval); anomalous "
            "cells are posted to the alert webhook once."
        ),
        metadata={"table": "kpi.anomaly_verdicts", "view": "kpi.anomalies"},
        **_follows_the_kpi(kpi),
    )
    def _anomalies(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        _yield_the_cores_if_background(context)
        from analytics_pipelines.lib.ml.alerts import send_anomaly_alerts
        from analytics_pipelines.lib.ml.anomalies import judge_kpi

        with warehouse.get_warehouse().begin() as conn:
            result = judge_kpi(dbapi_connection(conn), kpi, _today(kpi))
        try:
            webhook_url = get_settings().alert_webhook_url
        except SettingsError as error:
            # Nothing is marked: the alerts go out on a run after the settings are fixed.
            context.log.error(f"settings are invalid, no anomaly alert sent: {error}")
            webhook_url, outcome = None, None
        else:
            outcome = send_anomaly_alerts(warehouse.get_warehouse(), kpi, webhook_url)
            if outcome.reason:
                context.log.warning(outcome.reason)
        return dg.MaterializeResult(
            metadata={
                "judged_cells": result.judged,
                "anomalous_cells": result.anomalous,
                "series_judged": result.series,
                "interval_level": spec.interval_level,
                "alerts_sent": outcome.sent if outcome else 0,
                "alerts_waiting": outcome.waiting if outcome else 0,
                "alert_channel": "webhook" if webhook_url else "log (ALERT_WEBHOOK_URL not set)",
                **_skipped_metadata(result.skipped),
            }
        )

    return _anomalies


def build_no_anomalies_check(kpi: KpiSpec) -> dg.AssetChecksDefinition:
    """WARN while the latest judged days of the KPI hold anomalous cells."""

    @dg.asset_check(
        asset=kpi_asset_key(kpi.name),
        name=NO_ANOMALIES_CHECK,
        additional_deps=[anomalies_asset_key(kpi.name)],
        automation_condition=AFTER_KPI_REFRESH,
        description=(
            f"No anomalous day value in the {CHECK_DAYS} days up to the latest judged day "
            "(verdicts of anomalies/anomalies_<kpi>)."
        ),
    )
    def _no_anomalies(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        from analytics_pipelines.lib.ml.read import latest_judged_day, read_anomalies

        with warehouse.get_warehouse().connect() as conn:
            dbapi = dbapi_connection(conn)
            latest = latest_judged_day(dbapi, kpi.name)
            found = (
                read_anomalies(dbapi, kpi.name, latest - dt.timedelta(days=CHECK_DAYS - 1), latest)
                if latest
                else []
            )
        if latest is None:
            description = "no day judged yet"
        elif not found:
            description = f"no anomalous value in the {CHECK_DAYS} days up to {latest}"
        else:
            description = "; ".join(
                f"{a.period_date} {a.series}: {float(a.value):g} {a.direction} "
                f"[{a.lo:.4g}, {a.hi:.4g}]"
                for a in found[:10]
            )
        return dg.AssetCheckResult(
            passed=not found,
            severity=dg.AssetCheckSeverity.WARN,
            description=description,
            metadata={
                "anomalous_cells": len(found),
                "latest_judged_day": latest.isoformat() if latest else "",
                "command": f"analytics-pipelines kpi anomalies {kpi.name}",
            },
        )

    return _no_anomalies


@dataclass(frozen=True)
class MlDefinitions:
    assets: list[dg.AssetsDefinition]
    checks: list[dg.AssetChecksDefinition]
    sensor: dg.AutomationConditionSensorDefinition | None


def build_ml_definitions(catalog: Catalog, sensor_interval_seconds: int = 30) -> MlDefinitions:
    kpis = sorted(catalog.kpis.values(), key=lambda k: k.name)
    assets = [build_forecast_asset(k) for k in kpis if k.forecast is not None]
    assets += [build_anomalies_asset(k) for k in kpis if k.anomalies is not None]
    checks = [build_no_anomalies_check(k) for k in kpis if k.anomalies is not None]
    if not assets:
        return MlDefinitions([], [], None)
    target = dg.AssetSelection.assets(*assets) | dg.AssetSelection.checks(*checks)
    sensor = dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=target,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=max(sensor_interval_seconds, MIN_INTERVAL_SECONDS),
        run_tags=run_priority.ML_REFIT,
        description=(
            "Runs forecast/forecast_<kpi>, anomalies/anomalies_<kpi> and the no_anomalies checks after the KPI's "
            "refreshes (their automation conditions)."
        ),
    )
    return MlDefinitions(assets, checks, sensor)


@lru_cache(maxsize=4)
def ml_definitions_for(catalog_dir: str, sensor_interval_seconds: int) -> MlDefinitions:
    return build_ml_definitions(load_catalog_cached(catalog_dir), sensor_interval_seconds)
