"""`kpi/<name>` assets, one per catalog KPI, grouped by value chain, and their target checks."""

import dagster as dg

from analytics_pipelines.defs.kpis.factory import kpi_definitions_for
from analytics_pipelines.lib.settings import get_settings


@dg.definitions
def kpi_assets() -> dg.Definitions:
    settings = get_settings()
    built = kpi_definitions_for(str(settings.catalog_dir), settings.sensor_interval_seconds)
    return dg.Definitions(
        assets=built.assets, asset_checks=built.checks, jobs=list(built.jobs.values())
    )
