"""The KPI invalidation sensor: loads that touch business dates refresh those KPI partitions."""

import dagster as dg

from analytics_pipelines.defs.kpis.factory import kpi_definitions_for
from analytics_pipelines.lib.settings import get_settings


@dg.definitions
def kpi_sensors() -> dg.Definitions:
    settings = get_settings()
    built = kpi_definitions_for(str(settings.catalog_dir), settings.sensor_interval_seconds)
    return dg.Definitions(sensors=[built.sensor] if built.sensor else [])
