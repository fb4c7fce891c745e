"""Dagster definitions built from the KPI catalog: `kpi/<name>` assets, refresh jobs, schedules
and the invalidation sensor (defs/kpis/sensor_factory.py). `defs/kpis/*.py` exposes them; tests
call the factory with their own catalog.

* Assets are daily-partitioned in the KPI's time zone (today's partition exists: `end_offset=1`,
  so the running day can be refreshed) and backfill a whole range in one run.
* A KPI with a target gets the WARN check `on_target` (lib/kpi/targets.py): the latest complete
  period of each grain with a target, compared with it; it runs with every refresh of the KPI.
* One job per time zone (assets of one job share one partitions definition).
* One schedule per (refresh cron, time zone): the cron runs in the KPI's zone and refreshes the
  partition of the local day of the tick.
* One sensor maps the business time touched by loads to the partitions to refresh.
* A failing blocking check (`quarantine_rate` on `clean/<source>`, lib/kpi/gate.py) holds every
  KPI computed from that source: the sensor requests no run for it and keeps its cursor (the
  touched periods stay pending and are refreshed on the first tick after the check passes), a
  schedule leaves it out of the run (or skips), and the asset itself refuses to write (a red
  step: backfills and hand-launched runs keep the previous values). A sensor run requested
  shortly before a block and refused by the asset is requested again after it (see
  `SensorCursor.holding`).
"""

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

import dagster as dg

from analytics_pipelines.defs.kpis.names import (
    DEFAULT_PARTITIONS_START,
    HELD_TAG,
    ON_TARGET_CHECK,
    PARTITIONS_START_ENV,
    RANGE_END_TAG,
    RANGE_START_TAG,
    REASON_TAG,
    SENSOR_NAME,
    TRIGGER_TAG,
    AssetJob,
    clean_asset_key,
    cron_slug,
    job_name,
    kpi_asset_key,
    kpi_partitions,
    partitions_start,
    schedule_name,
    slug,
)
from analytics_pipelines.defs.kpis.sensor_factory import build_kpi_sensor
from analytics_pipelines.lib.catalog import Catalog, KpiSpec, load_catalog_cached
from analytics_pipelines.lib.kpi.engine import RefreshResult, refresh_kpi
from analytics_pipelines.lib.kpi.gate import (
    blocked_sources,
    held_message,
    kpi_blocks,
    kpi_sources,
)
from analytics_pipelines.lib.kpi.periods import local_date
from analytics_pipelines.lib.kpi.plan import KpiPlan, plan_catalog
from analytics_pipelines.lib.kpi.targets import latest_complete_periods
from analytics_pipelines.lib.logging import bound_context, run_context_fields
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import WarehouseResource

__all__ = [
    "DEFAULT_PARTITIONS_START",
    "HELD_TAG",
    "ON_TARGET_CHECK",
    "PARTITIONS_START_ENV",
    "RANGE_END_TAG",
    "RANGE_START_TAG",
    "REASON_TAG",
    "SENSOR_NAME",
    "TRIGGER_TAG",
    "AssetJob",
    "KpiDefinitions",
    "build_kpi_asset",
    "build_kpi_definitions",
    "build_kpi_jobs",
    "build_kpi_schedules",
    "build_kpi_sensor",
    "build_target_check",
    "clean_asset_key",
    "cron_slug",
    "job_name",
    "kpi_asset_key",
    "kpi_definitions_for",
    "kpi_partitions",
    "partitions_start",
    "schedule_name",
    "slug",
]


def _number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    return value


def _preview_markdown(result: RefreshResult) -> str:
    if not result.preview:
        return "_no values in the refreshed days_"
    lines = ["| period | dimensions | value |", "|---|---|---|"]
    for row in result.preview:
        dims = ", ".join(f"{k}={v}" for k, v in sorted(row["dimensions"].items())) or "total"
        lines.append(f"| {row['period']} | {dims} | {_number(row['value'])} |")
    return "\n".join(lines)


def _materialization(
    context: dg.AssetExecutionContext, result: RefreshResult, warehouse: Warehouse, kpi: KpiSpec
) -> dg.MaterializeResult:
    """What every partition of the run records, plus a preview and a chart on its last one.

    A ranged run records one materialisation per partition. The preview and the chart describe
    the run, not a day, so only the range's last partition (the asset's latest materialisation,
    the one the UI shows) carries them: a year's backfill does not write 365 copies of them.
    """
    metadata: dict[str, Any] = {
        "first_day": result.first_day.isoformat(),
        "last_day": result.last_day.isoformat(),
        "rows_written": result.rows,
        **{f"rows_{grain}": rows for grain, rows in result.rows_by_grain.items()},
    }
    if result.skipped:
        metadata["skipped"] = result.skipped
    described: dict[str, Any] = {"preview": dg.MetadataValue.md(_preview_markdown(result))}
    if not result.skipped:
        # Imported here: only a refresh draws, loading the definitions does not.
        from analytics_pipelines.lib.kpi.chart import chart_markdown, recent_values, render_svg

        with warehouse.connect() as conn:
            recent = recent_values(conn, kpi, result.last_day)
        described["chart"] = dg.MetadataValue.md(
            chart_markdown(render_svg(recent), f"{kpi.name}, recent values")
        )
    context.add_asset_metadata(described, partition_key=context.partition_key_range.end)
    return dg.MaterializeResult(metadata=metadata)


def build_kpi_asset(plan: KpiPlan, start: str, plans: dict[str, KpiPlan]) -> dg.AssetsDefinition:
    kpi = plan.kpi
    sources = kpi_sources(plans, plan.name)
    # A measure reads its clean table and those of its lookups' references; a derived KPI the
    # values of its inputs, of any source.
    deps = [
        *(clean_asset_key(s.name) for s in ([plan.source] if plan.source else [])),
        *(clean_asset_key(reference.name) for reference in plan.references.values()),
        *(kpi_asset_key(ref) for ref in plan.inputs),
    ]
    freshness = (
        dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=kpi.freshness_hours))
        if kpi.freshness_hours
        else None
    )

    @dg.asset(
        key=kpi_asset_key(kpi.name),
        group_name=kpi.value_chain,
        description=kpi.description.strip().splitlines()[0],
        kinds={"postgres"},
        partitions_def=kpi_partitions(kpi.timezone, start),
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=deps,
        freshness_policy=freshness,
        metadata={
            "unit": kpi.unit,
            "source": ", ".join(s.name for s in sources),
            "expression": kpi.measure or kpi.derived or "",
            "filter": kpi.filter or "",
            "dimensions": ", ".join(kpi.dimensions),
            "grains": ", ".join(kpi.grains),
            "timezone": kpi.timezone,
            "refresh_cron": kpi.refresh_cron,
            "view": f"kpi.{kpi.name}",
        },
        tags={"value_chain": kpi.value_chain},
    )
    def _kpi(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        # One run may carry a whole backfill range: it is computed with one statement per grain.
        key_range = context.partition_key_range
        first = dt.date.fromisoformat(key_range.start)
        last = dt.date.fromisoformat(key_range.end)
        # Whoever launched the run (backfill, hand, a sensor run queued before the block): a
        # blocked source's numbers are not published; the step fails, the old values stay.
        blocked = blocked_sources(warehouse.get_warehouse(), sources)
        if blocked:
            raise dg.Failure(
                description=(
                    f"kpi {kpi.name} not refreshed for {first}..{last}: "
                    + "; ".join(v.reason for v in blocked.values())
                ),
                metadata={
                    "blocked_sources": ", ".join(sorted(blocked)),
                    "first_day": first.isoformat(),
                    "last_day": last.isoformat(),
                },
                allow_retries=False,
            )
        with bound_context(**run_context_fields(context)):
            result = refresh_kpi(warehouse.get_warehouse(), plan, first, last)
        if result.skipped:
            context.log.warning(f"{kpi.name}: {result.skipped}")
        materialized = _materialization(context, result, warehouse.get_warehouse(), kpi)
        reason = context.run.tags.get(REASON_TAG)
        if reason is None:
            return materialized
        # A sensor run of window KPIs: which touched days made it rewrite the later days too.
        return dg.MaterializeResult(metadata={**(materialized.metadata or {}), "reason": reason})

    return _kpi


def build_target_check(kpi: KpiSpec) -> dg.AssetChecksDefinition:
    """WARN when the latest complete period of a grain with a target is off target."""
    target = kpi.target
    assert target is not None
    cells = "every cell" if target.applies_to == "every_cell" else "the total"

    @dg.asset_check(
        asset=kpi_asset_key(kpi.name),
        name=ON_TARGET_CHECK,
        description=(
            f"The latest complete period of each grain with a target ({kpi.timezone}) meets it "
            f"({target.direction} is better; {cells}). A period without a value yet passes and "
            "says so."
        ),
    )
    def _on_target(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.get_warehouse().connect() as conn:
            verdicts = latest_complete_periods(conn, kpi, dt.datetime.now(dt.UTC))
        metadata: dict[str, Any] = {"direction": target.direction, "applies_to": target.applies_to}
        for verdict in verdicts:
            metadata[f"{verdict.grain}_period"] = verdict.period
            metadata[f"{verdict.grain}_value"] = _number(verdict.total)
            metadata[f"{verdict.grain}_target"] = _number(verdict.target)
            metadata[f"{verdict.grain}_status"] = verdict.status
        return dg.AssetCheckResult(
            passed=all(v.status != "off_target" for v in verdicts),
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(v.describe(kpi) for v in verdicts),
            metadata=metadata,
        )

    return _on_target


@dataclass(frozen=True)
class KpiDefinitions:
    assets: list[dg.AssetsDefinition]
    jobs: dict[str, AssetJob]  # by time zone
    schedules: list[dg.ScheduleDefinition]
    sensor: dg.SensorDefinition | None
    checks: list[dg.AssetChecksDefinition] = field(default_factory=list)


def build_kpi_jobs(plans: dict[str, KpiPlan]) -> dict[str, AssetJob]:
    by_zone: dict[str, list[str]] = defaultdict(list)
    for plan in plans.values():
        by_zone[plan.kpi.timezone].append(plan.name)
    return {
        zone: dg.define_asset_job(
            name=job_name(zone),
            selection=dg.AssetSelection.assets(*(kpi_asset_key(n) for n in sorted(names))),
            description=f"Refreshes KPIs computed in {zone} for a day or a range of days.",
        )
        for zone, names in sorted(by_zone.items())
    }


def _schedule(
    cron: str, zone: str, names: list[str], job: AssetJob, plans: dict[str, KpiPlan]
) -> dg.ScheduleDefinition:
    sources = {s.name: s for n in names for s in kpi_sources(plans, n)}

    @dg.schedule(
        name=schedule_name(cron, zone),
        cron_schedule=cron,
        execution_timezone=zone,
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Refreshes today's partition ({zone}) of: {', '.join(names)}",
    )
    def _refresh(
        context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource
    ) -> dg.RunRequest | dg.SkipReason:
        moment = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        day = local_date(moment, zone)
        # Leaving a held KPI out loses nothing: clean rows change only through loads, corrections
        # and replays, which record touched periods, and the sensor keeps a blocked source's
        # touched periods pending until the check passes; a day nobody touched is unchanged.
        holds = kpi_blocks(
            plans, names, blocked_sources(warehouse.get_warehouse(), sources.values())
        )
        if holds:
            message = held_message(holds)
            context.log.warning(f"{day}: {message}")
        free = [n for n in names if n not in holds]
        if not free:
            return dg.SkipReason(f"{day}: {message}")
        tags = {TRIGGER_TAG: "schedule"}
        if holds:
            tags[HELD_TAG] = message
        return dg.RunRequest(
            partition_key=day.isoformat(),
            asset_selection=[kpi_asset_key(n) for n in free],
            tags=tags,
        )

    return _refresh


def build_kpi_schedules(
    plans: dict[str, KpiPlan], jobs: dict[str, AssetJob]
) -> list[dg.ScheduleDefinition]:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for plan in plans.values():
        groups[(plan.kpi.refresh_cron, plan.kpi.timezone)].append(plan.name)
    return [
        _schedule(cron, zone, sorted(names), jobs[zone], plans)
        for (cron, zone), names in sorted(groups.items())
    ]


def build_kpi_definitions(
    catalog: Catalog,
    *,
    start: str | None = None,
    sensor_interval_seconds: int = 30,
) -> KpiDefinitions:
    """Every KPI definition of `catalog` (raises CatalogError if a KPI cannot be computed)."""
    start = start or partitions_start()
    plans = plan_catalog(catalog)
    if not plans:
        return KpiDefinitions([], {}, [], None)
    jobs = build_kpi_jobs(plans)
    return KpiDefinitions(
        assets=[build_kpi_asset(plan, start, plans) for plan in plans.values()],
        jobs=jobs,
        schedules=build_kpi_schedules(plans, jobs),
        sensor=build_kpi_sensor(plans, jobs, start, sensor_interval_seconds),
        checks=[build_target_check(p.kpi) for p in plans.values() if p.kpi.target is not None],
    )


@lru_cache(maxsize=4)
def kpi_definitions_for(catalog_dir: str, sensor_interval_seconds: int) -> KpiDefinitions:
    """Built once per process: the assets, schedules and sensor modules share the same jobs."""
    return build_kpi_definitions(
        load_catalog_cached(catalog_dir), sensor_interval_seconds=sensor_interval_seconds
    )
