"""`forecast/forecast_<kpi>` and `anomalies/anomalies_<kpi>` assets, the `no_anomalies` checks and the automation
sensor that runs them after the KPIs' refreshes (defs/ml/factory.py)."""

import dagster as dg

from analytics_pipelines.defs.ml.factory import ml_definitions_for
from analytics_pipelines.lib.settings import get_settings


@dg.definitions
def ml_assets() -> dg.Definitions:
    settings = get_settings()
    built = ml_definitions_for(str(settings.catalog_dir), settings.sensor_interval_seconds)
    return dg.Definitions(
        assets=built.assets,
        asset_checks=built.checks,
        sensors=[built.sensor] if built.sensor else [],
    )
