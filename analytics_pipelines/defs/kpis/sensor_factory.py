"""The KPI invalidation sensor: business time touched by loads becomes the KPI partitions to
refresh (lib/kpi/invalidation.py decides which days; lib/kpi/gate.py which KPIs are held)."""

import datetime as dt
import hashlib
import time
from collections import defaultdict

import dagster as dg

from analytics_pipelines.defs import run_priority
from analytics_pipelines.defs.kpis.names import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    REASON_TAG,
    SENSOR_NAME,
    TRIGGER_TAG,
    AssetJob,
    kpi_asset_key,
)
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
from analytics_pipelines.lib.kpi.plan import KpiPlan
from analytics_pipelines.resources import WarehouseResource


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
                tags = {TRIGGER_TAG: "invalidation", **run_priority.KPI_TOUCHED_DAYS}
                windowed = ""
                if wanted != plain:
                    tags.update(run_priority.KPI_WINDOW_DAYS)
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
