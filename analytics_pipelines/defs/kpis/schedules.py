"""KPI refresh schedules: one per (refresh cron, time zone) declared in the catalog."""

import dagster as dg

from analytics_pipelines.defs.kpis.factory import kpi_definitions_for
from analytics_pipelines.lib.settings import get_settings


@dg.definitions
def kpi_schedules() -> dg.Definitions:
    settings = get_settings()
    built = kpi_definitions_for(str(settings.catalog_dir), settings.sensor_interval_seconds)
    return dg.Definitions(schedules=built.schedules)
