"""Names and partitions of the KPI Dagster objects: asset keys, jobs, schedules, tags (shared by
the factory, the sensor factory and the CLI)."""

import datetime as dt
import hashlib
import os
import re
from typing import Any

import dagster as dg

from analytics_pipelines.lib.catalog import CatalogError

# Partition sets must not move between deployments: a fixed first day, overridable per install.
DEFAULT_PARTITIONS_START = "2024-01-01"
PARTITIONS_START_ENV = "KPI_PARTITIONS_START"
SENSOR_NAME = "kpi_invalidation_sensor"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
TRIGGER_TAG = "analytics_pipelines/kpi_trigger"
HELD_TAG = "analytics_pipelines/kpis_held"  # KPIs a scheduled run leaves out, and why
# Why a sensor run rewrites days beyond those touched (the windows containing them).
REASON_TAG = "analytics_pipelines/kpi_refresh_reason"
ON_TARGET_CHECK = "on_target"

# What dg.define_asset_job returns; its class is not part of Dagster's public API.
AssetJob = Any


def partitions_start() -> str:
    value = os.environ.get(PARTITIONS_START_ENV, DEFAULT_PARTITIONS_START).strip()
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise CatalogError(
            [f"{PARTITIONS_START_ENV} is invalid ({value!r}): expected a date such as 2024-01-01"]
        ) from None
    return value


def kpi_asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["kpi", name])


def clean_asset_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["clean", source])


def kpi_partitions(timezone: str, start: str) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=start, timezone=timezone, end_offset=1)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def cron_slug(cron: str) -> str:
    """A readable name part for common crons, else a short stable hash."""
    fields = cron.split()
    if len(fields) == 5 and fields[1:] == ["*", "*", "*", "*"]:
        minute = fields[0]
        if minute.startswith("*/") and minute[2:].isdigit():
            return f"every_{minute[2:]}_minutes"
        if minute == "0":
            return "hourly"
        if minute.isdigit():
            return f"hourly_at_{int(minute):02d}"
        if minute == "*":
            return "every_minute"
    if len(fields) == 5 and fields[2:] == ["*", "*", "*"] and all(f.isdigit() for f in fields[:2]):
        return f"daily_at_{int(fields[1]):02d}{int(fields[0]):02d}"
    return "cron_" + hashlib.sha256(cron.encode()).hexdigest()[:8]


def job_name(timezone: str) -> str:
    return f"kpi_refresh_{slug(timezone)}"


def schedule_name(cron: str, timezone: str) -> str:
    return f"kpi_refresh_{cron_slug(cron)}_{slug(timezone)}"
