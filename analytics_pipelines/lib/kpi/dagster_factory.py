"""Dagster definitions built from the KPI catalog: `kpi/<name>` assets, refresh jobs, schedules
and the invalidation sensor. `defs/kpis/*.py` exposes them; tests call the factory with their
own catalog.

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
import hashlib
import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

import dagster as dg

from analytics_pipelines.lib.catalog import Catalog, CatalogError, KpiSpec, load_catalog_cached
from analytics_pipelines.lib.kpi.engine import RefreshResult, refresh_kpi
from analytics_pipelines.lib.kpi.gate import (
    blocked_sources,
    held_message,
    kpi_blocks,
    kpi_sources,
)
from analytics_pipelines.lib.kpi.invalidation import (
    DEFAULT_BATCH_ROWS,
    SensorCursor,
    refresh_reason,
    refreshed_days,
    touched_dates,
)
from analytics_pipelines.lib.kpi.periods import contiguous_ranges, local_date
from analytics_pipelines.lib.kpi.plan import KpiPlan, plan_catalog
from analytics_pipelines.lib.kpi.targets import latest_complete_periods
from analytics_pipelines.lib.logging import bound_context, run_context_fields
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import WarehouseResource

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
    result: RefreshResult, warehouse: Warehouse, kpi: KpiSpec
) -> dg.MaterializeResult:
    metadata: dict[str, Any] = {
        "first_day": result.first_day.isoformat(),
        "last_day": result.last_day.isoformat(),
        "rows_written": result.rows,
        **{f"rows_{grain}": rows for grain, rows in result.rows_by_grain.items()},
        "preview": dg.MetadataValue.md(_preview_markdown(result)),
    }
    if result.skipped:
        metadata["skipped"] = result.skipped
    else:
        # Imported here: only a refresh draws, loading the definitions does not.
        from analytics_pipelines.lib.kpi.chart import chart_markdown, recent_values, render_svg

        with warehouse.connect() as conn:
            recent = recent_values(conn, kpi, result.last_day)
        metadata["chart"] = dg.MetadataValue.md(
            chart_markdown(render_svg(recent), f"{kpi.name}, recent values")
        )
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
        materialized = _materialization(result, warehouse.get_warehouse(), kpi)
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


def _invalidation_requests(
    days: frozenset[dt.date],
    run_key: str,
    job: str,
    keys: list[dg.AssetKey],
    tags: dict[str, str],
) -> list[dg.RunRequest]:
    """One run per contiguous range of `days` (`run_key` has {low} and {high} for its ends)."""
    requests = []
    for low, high in contiguous_ranges(days):
        key = run_key.format(low=low, high=high)
        if low == high:
            request = dg.RunRequest(
                run_key=key,
                job_name=job,
                asset_selection=keys,
                partition_key=low.isoformat(),
                tags=tags,
            )
        else:
            # One run for a contiguous range: the assets' single-run backfill policy computes
            # it with one statement per grain.
            request = dg.RunRequest(
                run_key=key,
                job_name=job,
                asset_selection=keys,
                tags={**tags, RANGE_START_TAG: low.isoformat(), RANGE_END_TAG: high.isoformat()},
            )
        requests.append(request)
    return requests


def build_kpi_sensor(
    plans: dict[str, KpiPlan],
    jobs: dict[str, AssetJob],
    start: str,
    interval_seconds: int,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> dg.SensorDefinition:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for plan in plans.values():
        # A derived KPI changes when any source of its inputs does, not only its own.
        for spec in kpi_sources(plans, plan.name):
            groups[(spec.name, plan.kpi.timezone)].append(plan.name)
    zones: dict[str, set[str]] = defaultdict(set)
    for source, zone in groups:
        zones[source].add(zone)
    zones_by_source = dict(zones)
    first_day = dt.date.fromisoformat(start)
    all_sources = {s.name: s for name in plans for s in kpi_sources(plans, name)}

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=list(jobs.values()),
        description=(
            "Refreshes exactly the KPI partitions whose business dates a load touched "
            "(late data, corrected files); cursor = last ingest.touched_periods id seen per "
            "source. A source whose KPIs are held by a failing blocking check keeps its "
            "cursor until the check passes."
        ),
    )
    def _invalidate(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource
    ) -> dg.SensorResult | dg.SkipReason:
        now = time.time()
        # Checked every tick, news or not: a file quarantined entirely touches no period.
        blocked = blocked_sources(warehouse.get_warehouse(), all_sources.values())
        held = kpi_blocks(plans, plans, blocked)
        held_sources = {s.name for n in held for s in kpi_sources(plans, n)}
        previous = SensorCursor.parse(context.cursor)
        released = previous.held - held_sources
        cursor = previous.holding(held_sources, now)
        with warehouse.get_warehouse().connect() as conn:
            touched = touched_dates(conn, zones_by_source, cursor, batch_rows)
        if not touched.upto:
            if held:
                return dg.SensorResult(
                    skip_reason=f"nothing to refresh; {held_message(held)}",
                    cursor=cursor.serialise(),
                )
            return dg.SkipReason("no business periods touched since the last tick")
        requests: list[dg.RunRequest] = []
        started_after: dict[str, int] = {}
        for (source, zone), all_names in sorted(groups.items()):
            if source not in touched.upto:
                continue
            holds = {n: held[n] for n in all_names if n in held}
            names = [n for n in all_names if n not in holds]
            days = touched.dates.get((source, zone), set())
            today = local_date(dt.datetime.now(dt.UTC), zone)
            outside = sorted(d for d in days if d < first_day or d > today)
            if outside:
                context.log.warning(
                    f"{source} ({zone}): {len(outside)} touched dates outside the KPI partitions "
                    f"{first_day}..{today} are not refreshed: {outside[0]}..{outside[-1]}"
                )
            # While some KPIs are held the cursor stays, so this partial request repeats each
            # tick with the same run key (Dagster launches it once); the full request after the
            # unblock has another key.
            # The first request after a hold may cover exactly the range (and end id) of a run
            # refused during it; a key of its own makes Dagster launch it again.
            partial = (
                ":without_" + hashlib.sha256(",".join(sorted(holds)).encode()).hexdigest()[:8]
                if holds
                else f":released_{int(now)}"
                if source in released
                else ""
            )
            # KPIs whose stored days the touched days change alike share a run: per-period KPIs
            # the touched days, window KPIs every later day whose window contains one of them.
            by_days: dict[frozenset[dt.date], list[str]] = defaultdict(list)
            for name in sorted(names):
                changed = refreshed_days(plans, name, source, days, today)
                by_days[frozenset(d for d in changed if d >= first_day)].append(name)
            plain = frozenset(d for d in days if first_day <= d <= today)
            for wanted, group in sorted(by_days.items(), key=lambda item: item[1]):
                keys = [kpi_asset_key(n) for n in group]
                tags = {TRIGGER_TAG: "invalidation"}
                windowed = ""
                if wanted != plain:
                    windowed = ":" + hashlib.sha256(",".join(group).encode()).hexdigest()[:8]
                    tags[REASON_TAG] = refresh_reason(plans, group, days, set(wanted))
                requests.extend(
                    _invalidation_requests(
                        wanted,
                        f"kpi:{source}:{zone}:{{low}}:{{high}}:{touched.upto[source]}"
                        f"{partial}{windowed}",
                        jobs[zone].name,
                        keys,
                        tags,
                    )
                )
                if wanted:
                    started_after[source] = cursor.after(source)
        upto = {s: last for s, last in touched.upto.items() if s not in held_sources}
        next_cursor = cursor.advanced(upto).with_requests(started_after, now).serialise()
        waiting = {s for s in touched.upto if s in held_sources}
        if not waiting:
            return dg.SensorResult(run_requests=requests, cursor=next_cursor)
        message = f"touched periods of {', '.join(sorted(waiting))} kept pending: " + held_message(
            {n: v for n, v in held.items() if {s.name for s in kpi_sources(plans, n)} & waiting}
        )
        context.log.warning(message)
        if requests:
            return dg.SensorResult(run_requests=requests, cursor=next_cursor)
        return dg.SensorResult(skip_reason=message, cursor=next_cursor)

    return _invalidate


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
