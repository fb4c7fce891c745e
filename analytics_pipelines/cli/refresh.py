"""`analytics-pipelines refresh`: load what is pending, then recompute every KPI over its data.

    analytics-pipelines refresh [--from D] [--to D] [--source S] [--kpi K] [--value-chain V]
                                [--no-ingest]

One command instead of one per layer and per time zone. It runs the code location's own jobs as
Dagster runs in the instance of DAGSTER_HOME (the UI shows them): first `ingest_<source>` (raw and
clean of every pending file), then one `kpi_refresh_<zone>` run per time zone over the range of
local dates the data covers (or `--from`/`--to`), one statement per grain, checks included.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from analytics_pipelines.cli.kpi import iso_date

if TYPE_CHECKING:
    import dagster as dg

    from analytics_pipelines.lib.catalog import Catalog
    from analytics_pipelines.lib.kpi.plan import KpiPlan


# Dagster's switch (dagster/_core/storage/event_log/base.py reads it when a run is created).
PLANNED_EVENTS_AS_RANGE = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


# Storage connections held by the command's instance (see _instance).
_POOL_RECYCLE_SECONDS = 3600
_POOL_OVERFLOW = 4


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "refresh",
        help="load pending files and recompute every KPI over its data's dates (Dagster runs)",
        description=__doc__.split("\n\n", 2)[2] if __doc__ else None,
    )
    parser.add_argument("--from", dest="first", type=iso_date, help="first local date (YYYY-MM-DD)")
    parser.add_argument("--to", dest="last", type=iso_date, help="last local date (YYYY-MM-DD)")
    parser.add_argument(
        "--source", action="append", default=[], help="only this source and its KPIs (repeatable)"
    )
    parser.add_argument("--kpi", action="append", default=[], help="only this KPI (repeatable)")
    parser.add_argument(
        "--value-chain", action="append", default=[], help="only KPIs of this value chain"
    )
    parser.add_argument(
        "--no-ingest", action="store_true", help="recompute KPIs only, load no pending file"
    )
    parser.set_defaults(func=run)


class SelectionError(Exception):
    """The selection names something the catalog does not have."""


def select_kpis(
    catalog: Catalog,
    plans: dict[str, KpiPlan],
    kpis: list[str],
    value_chains: list[str],
    sources: list[str],
) -> list[str]:
    """The KPIs to refresh: those named, of the value chains named, computed from the sources
    named (all when nothing is named), plus the inputs of the derived ones among them."""
    from analytics_pipelines.lib.kpi.plan import kpi_sources
    from analytics_pipelines.lib.kpi.validation import did_you_mean

    for name in kpis:
        if name not in catalog.kpis:
            raise SelectionError(f"unknown KPI {name!r}{did_you_mean(name, catalog.kpis)}")
    chains = {k.value_chain for k in catalog.kpis.values()}
    for chain in value_chains:
        if chain not in chains:
            raise SelectionError(f"unknown value chain {chain!r}{did_you_mean(chain, chains)}")
    for source in sources:
        if source not in catalog.sources:
            raise SelectionError(
                f"unknown source {source!r}{did_you_mean(source, catalog.sources)}"
            )
    chosen = {
        name
        for name, kpi in catalog.kpis.items()
        if (not kpis or name in kpis)
        and (not value_chains or kpi.value_chain in value_chains)
        and (not sources or {s.name for s in kpi_sources(plans, name)} & set(sources))
    }
    pending = list(chosen)
    while pending:  # a derived KPI is computed from its inputs' stored values: refresh them too
        for ref in plans[pending.pop()].inputs:
            if ref not in chosen:
                chosen.add(ref)
                pending.append(ref)
    return sorted(chosen)


def _instance() -> tuple[dg.DagsterInstance, str]:
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.ephemeral(), "no DAGSTER_HOME: runs are not kept for the UI"
    instance = dg.DagsterInstance.get()
    # Dagster's PostgreSQL storages connect once per statement by default (no pool, so that the
    # many instances a daemon makes hold no connections). This command keeps one instance for
    # its whole life and writes thousands of events: it holds a connection, as the webserver
    # does (the same call). A year's backfill of 8 KPIs spends 1.2 s less (bench/README.md).
    instance.optimize_for_webserver(
        statement_timeout=0, pool_recycle=_POOL_RECYCLE_SECONDS, max_overflow=_POOL_OVERFLOW
    )
    return instance, f"instance {os.environ['DAGSTER_HOME']}"


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# Dagster's console logger prints every event of a run; the command prints one line per run.
_QUIET: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _failure(result: Any) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    if not failures:
        return "failed"
    error = failures[0].step_failure_data.error
    return (error.message if error is not None else "failed").strip().splitlines()[0]


def run(args: argparse.Namespace) -> int:
    from analytics_pipelines.definitions import defs as build_definitions
    from analytics_pipelines.defs.ingest.sensors import ingest_job_name
    from analytics_pipelines.defs.kpis.factory import (
        RANGE_END_TAG,
        RANGE_START_TAG,
        job_name,
        kpi_asset_key,
        partitions_start,
    )
    from analytics_pipelines.lib.catalog import load_catalog
    from analytics_pipelines.lib.kpi.data_range import data_dates
    from analytics_pipelines.lib.kpi.plan import kpi_sources, plan_catalog
    from analytics_pipelines.lib.settings import get_settings
    from analytics_pipelines.lib.warehouse import Warehouse

    if args.first and args.last and args.last < args.first:
        sys.stderr.write(f"--from {args.first} is after --to {args.last}\n")
        return 2
    settings = get_settings()
    catalog = load_catalog(settings.catalog_dir)
    plans = plan_catalog(catalog)
    try:
        names = select_kpis(catalog, plans, args.kpi, args.value_chain, args.source)
    except SelectionError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    defs = build_definitions()
    instance, where = _instance()
    _say(f"refresh: {len(names)} KPI(s); {where}")
    failed = 0

    sources = sorted(
        set(args.source) or {s.name for name in names for s in kpi_sources(plans, name)}
    )
    for source in [] if args.no_ingest else sources:
        started = time.monotonic()
        result = defs.resolve_job_def(ingest_job_name(source)).execute_in_process(
            instance=instance,
            run_config=_QUIET,
            tags={"analytics_pipelines/trigger": "cli refresh"},
            raise_on_error=False,
        )
        took = time.monotonic() - started
        if not result.success:
            failed += 1
            _say(f"ingest {source}: FAILED ({_failure(result)}) — run {result.run_id}")
            continue
        raw = next(
            (
                e.materialization.metadata
                for e in result.get_asset_materialization_events()
                if e.asset_key is not None and e.asset_key.path[0] == "raw"
            ),
            {},
        )
        loaded = getattr(raw.get("files_loaded"), "value", 0)
        rows = getattr(raw.get("rows_loaded"), "value", 0)
        failures = getattr(raw.get("files_failed"), "value", 0)
        note = (
            f", {failures} file(s) failed (`analytics-pipelines files {source}`)"
            if failures
            else ""
        )
        _say(
            f"ingest {source}: {loaded} file(s) loaded, {rows:,} row(s){note} "
            f"— run {result.run_id[:8]} in {took:.1f} s"
        )

    # A ranged run records, before it starts, a "planned" event per asset and partition, one
    # database round trip each: 2,920 for a year of 8 KPIs, about 4 x the run's own SQL. Dagster's
    # switch records one per asset with the range instead. What it gives up: a run that fails
    # does not paint its partitions red; they keep their last materialisation, which is true
    # (a KPI's range is replaced in one transaction, so a failed run changed no value), and this
    # command reports the failed run. Sensor and schedule runs (a few days) keep the default.
    os.environ.setdefault(PLANNED_EVENTS_AS_RANGE, "true")
    warehouse = Warehouse(settings.database_url_plain, pool_size=1)
    first_partition = dt.date.fromisoformat(partitions_start())
    try:
        zones = sorted({catalog.kpis[n].timezone for n in names})
        for zone in zones:
            in_zone = [n for n in names if catalog.kpis[n].timezone == zone]
            covered = (
                None
                if args.first and args.last
                else data_dates(
                    warehouse,
                    {s.name: s for n in in_zone for s in kpi_sources(plans, n)}.values(),
                    zone,
                )
            )
            today = dt.datetime.now(ZoneInfo(zone)).date()
            first = args.first or (covered[0] if covered else None)
            last = args.last or (covered[1] if covered else None)
            if first is None or last is None:
                _say(f"kpi {zone}: no clean data yet for {', '.join(in_zone)}: nothing to compute")
                continue
            first, last = max(first, first_partition), min(last, today)
            if last < first:
                _say(f"kpi {zone}: {first}..{last} is outside the KPI partitions: nothing to do")
                continue
            started = time.monotonic()
            result = defs.resolve_job_def(job_name(zone)).execute_in_process(
                instance=instance,
                run_config=_QUIET,
                tags={
                    RANGE_START_TAG: first.isoformat(),
                    RANGE_END_TAG: last.isoformat(),
                    "analytics_pipelines/trigger": "cli refresh",
                },
                asset_selection=[kpi_asset_key(n) for n in in_zone],
                raise_on_error=False,
            )
            took = time.monotonic() - started
            days = (last - first).days + 1
            what = f"kpi {zone} {first}..{last} ({days} day(s)), {len(in_zone)} KPI(s)"
            if result.success:
                _say(f"{what}: ok — run {result.run_id[:8]} in {took:.1f} s")
            else:
                failed += 1
                _say(f"{what}: FAILED ({_failure(result)}) — run {result.run_id}")
    finally:
        warehouse.dispose()
    return 1 if failed else 0
