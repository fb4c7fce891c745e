"""KPI refresh benchmark: does refresh cost follow the touched periods, not the history?

1. Refresh one day of every demo KPI with 1 year of history in the clean tables, then with
   5 years (same rows per day). Goal: 5-year time <= 1.5 x the 1-year time.
2. Backfill 365 days of every demo KPI in one run (every grain, every dimension subset, written
   to kpi.kpi_values) versus the baseline: for each measure KPI one plain full-table GROUP BY
   (local day x all its dimensions, with its filter and measure) over the clean table, which
   holds exactly that year. Goal: backfill <= 3 x the baseline.
3. A late row five months before that day: refresh exactly the days whose stored values it
   changes (the sensor's set, lib/kpi/invalidation.py: its day for per-period KPIs, the next 27
   days of a 28-day rolling KPI, the rest of the year of a year-to-date KPI); the days per KPI
   are printed.

Times are medians of --repeats runs (the machine may be shared).

Starts a throwaway PostgreSQL (lib.pgserver.LocalPostgres) unless DATABASE_URL is set; with
DATABASE_URL the demo sources' clean tables in that database are REPLACED.

    python -m bench.kpi_bench [--quick] [--rows-per-day N] [--repeats N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects.postgresql import distinct_on

from analytics_pipelines.lib.catalog import Catalog, load_catalog
from analytics_pipelines.lib.kpi.engine import ensure_event_time_index, refresh_kpi
from analytics_pipelines.lib.kpi.expression_sql import compile_filter, compile_measure
from analytics_pipelines.lib.kpi.invalidation import refreshed_days
from analytics_pipelines.lib.kpi.lookups import joined_rows
from analytics_pipelines.lib.kpi.periods import contiguous_ranges, period_start_sql
from analytics_pipelines.lib.kpi.plan import KpiPlan, entity_columns, kpi_sources, plan_catalog
from analytics_pipelines.lib.pgserver import LocalPostgres, free_port
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR, normalise_database_url
from analytics_pipelines.lib.tables import clean_table
from analytics_pipelines.lib.warehouse import Warehouse

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TARGET_DAY = dt.date(2026, 6, 15)  # the day refreshed; history ends with it

# Synthetic clean rows, generated inside PostgreSQL: `g` numbers the row, `at` is its time.
# Row g lies g steps before the end of TARGET_DAY, so every day gets the same number of rows.
_GENERATORS: dict[str, str] = {
    "orders": """
        INSERT INTO clean.orders (order_id, line_no, ordered_at, customer_id, region, channel,
            product_sku, quantity, unit_price, discount, status, _file_id, _line)
        SELECT 'ORD-' || lpad(g::text, 8, '0'), 1, at, 'C' || (g % 20000),
            (ARRAY['north','south','east','west'])[1 + g % 4],
            (ARRAY['web','store','partner'])[1 + g % 3], 'SKU' || (g % 500), 1 + g % 7,
            (g % 100) + 0.99, CASE WHEN g % 5 = 0 THEN 1.5 END,
            (ARRAY['placed','shipped','returned','cancelled'])[1 + (g / 7) % 4], 1, g
        FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g,
             LATERAL (SELECT CAST(:end AS timestamptz) - g * CAST(:step AS interval) AS at) t
    """,
    # The customer master: one row per customer the orders name, loaded with the first year.
    "customers": """
        INSERT INTO clean.customers (customer_id, segment, country, signed_up_on, _file_id, _line)
        SELECT 'C' || g, (ARRAY['consumer','small_business','enterprise'])[1 + g % 3],
            (ARRAY['DE','AT','CH'])[1 + g % 3], DATE '2020-01-01' + g % 2000, 1, g + 1
        FROM generate_series(0, 19999) AS g
        WHERE CAST(:first AS bigint) = 1
    """,
    "inventory_movements": """
        INSERT INTO clean.inventory_movements (movement_id, moved_at, warehouse, product_sku,
            movement_type, quantity, unit_cost, on_hand_after, _file_id, _line)
        SELECT 'M' || g, at, (ARRAY['HAM','MUC','BER','FRA'])[1 + g % 4], 'SKU' || (g % 500),
            (ARRAY['receipt','pick','adjustment'])[1 + g % 3],
            CASE WHEN g % 3 = 1 THEN -(1 + g % 9) ELSE 1 + g % 50 END,
            CASE WHEN g % 11 = 0 THEN NULL ELSE (g % 40) + 0.5 END, (g * 7) % 400, 1, g
        FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g,
             LATERAL (SELECT CAST(:end AS timestamptz) - g * CAST(:step AS interval) AS at) t
    """,
    "support_tickets": """
        INSERT INTO clean.support_tickets (ticket_id, opened_at, opened_on, customer_id, channel,
            priority, resolved, resolution_minutes, satisfaction, _file_id, _line)
        SELECT 'T' || g, at, CAST(at AS date), 'C' || (g % 20000),
            (ARRAY['email','phone','chat'])[1 + g % 3],
            (ARRAY['low','normal','high','urgent'])[1 + g % 4], g % 4 <> 0,
            CASE WHEN g % 4 <> 0 THEN g % 600 END, CASE WHEN g % 3 = 0 THEN 1 + g % 5 END, 1, g
        FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g,
             LATERAL (SELECT CAST(:end AS timestamptz) - g * CAST(:step AS interval) AS at) t
    """,
}


@contextmanager
def database() -> Iterator[str]:
    given = os.environ.get("DATABASE_URL")
    if given:
        yield normalise_database_url(given)
        return
    folder = Path(tempfile.mkdtemp(prefix="ap-kpi-bench-"))
    folder.chmod(0o755)  # the server runs as `postgres` when we are root
    server = LocalPostgres(folder / "data", free_port(), durable=False)
    try:
        yield normalise_database_url(server.start())
    finally:
        server.destroy()
        shutil.rmtree(folder, ignore_errors=True)


def migrate(url: str) -> None:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")


def load_history(
    warehouse: Warehouse, catalog: Catalog, rows_per_day: int, from_year: int, to_year: int
) -> None:
    """Add the rows of history years [from_year, to_year) counted back from TARGET_DAY."""
    end = dt.datetime.combine(TARGET_DAY + dt.timedelta(days=1), dt.time(), dt.UTC)
    step = dt.timedelta(seconds=86400 / rows_per_day)
    with warehouse.begin() as conn:
        for statement in _GENERATORS.values():
            conn.execute(
                sa.text(statement),
                {
                    "first": from_year * 365 * rows_per_day + 1,
                    "last": to_year * 365 * rows_per_day,
                    "end": end,
                    "step": step,
                },
            )
    with warehouse.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for name in _GENERATORS:
            conn.execute(sa.text(f'VACUUM ANALYZE clean."{name}"'))  # fixed demo source names


def reset_tables(warehouse: Warehouse, catalog: Catalog) -> None:
    with warehouse.begin() as conn:
        for name in _GENERATORS:
            table = clean_table(catalog.sources[name])
            table.drop(conn, checkfirst=True)
            table.create(conn)
        conn.execute(sa.text("DELETE FROM kpi.kpi_values"))


def ordered(plans: dict[str, KpiPlan]) -> list[KpiPlan]:
    """Measures before the derived KPIs that read them."""
    return sorted(plans.values(), key=lambda p: (p.derived is not None, p.name))


def refresh_all(warehouse: Warehouse, plans: list[KpiPlan], first: dt.date, last: dt.date) -> int:
    return sum(refresh_kpi(warehouse, plan, first, last).rows for plan in plans)


def full_table_group_by(warehouse: Warehouse, plans: list[KpiPlan]) -> int:
    """The reference: for each measure KPI, one plain GROUP BY over its whole clean table (which
    holds exactly the year that is backfilled) by local day and all of the KPI's dimensions,
    with its filter and its measure; derived KPIs are left out (they read stored values). A
    semi-additive KPI groups the DISTINCT ON of each entity's row of the day, which it means.

    The groups are consumed inside PostgreSQL by `count(*), count(measure)`: nothing is
    transferred, and referencing the measure keeps the planner from dropping the aggregate
    (an unused aggregate of a subquery is not computed at all, count_distinct included).
    """
    groups = 0
    with warehouse.connect() as conn:
        for plan in plans:
            if plan.measure is None or plan.source is None:
                continue
            table = clean_table(plan.source)
            day = period_start_sql("day", table.c[plan.source.event_column], plan.kpi.timezone)
            filtered = compile_filter(plan.filter, table.c) if plan.filter is not None else None
            if plan.kpi.semi_additive is not None:
                # Its plain form: each entity's last (first) row of the day, then the GROUP BY.
                per = [table.c[n] for n in entity_columns(plan.kpi, plan.source)]
                event = table.c[plan.source.event_column]
                along = event.desc() if plan.kpi.semi_additive.take == "last" else event.asc()
                picked = (
                    sa.select(day.label("_day"), *table.c)
                    .ext(distinct_on(day, *per))
                    .order_by(day, *per, along)
                )
                if filtered is not None:
                    picked = picked.where(filtered)
                cols: Any = picked.subquery().c
                day = cols._day
                query = sa.select(
                    day.label("day"),
                    *(cols[d] for d in plan.kpi.dimensions),
                    compile_measure(plan.measure, cols).label("m"),
                ).group_by(day, *(cols[d] for d in plan.kpi.dimensions))
            else:
                # A lookup dimension (customer.segment) reads the reference: the baseline joins too.
                joined, column_of = joined_rows(plan, table)
                dimensions = [column_of(d) for d in plan.kpi.dimensions]
                query = (
                    sa.select(
                        day.label("day"),
                        *dimensions,
                        compile_measure(plan.measure, table.c).label("m"),
                    )
                    .select_from(joined)
                    .group_by(day, *dimensions)
                )
                if filtered is not None:
                    query = query.where(filtered)
            grouped = query.subquery()
            groups += conn.execute(
                sa.select(sa.func.count(), sa.func.count(grouped.c.m)).select_from(grouped)
            ).one()[0]
    return groups


# The backfill as an operator runs it: `analytics-pipelines refresh`, one Dagster run of the
# KPIs' job over the whole range, recording a materialisation per partition, in an instance
# configured as make dev's (Dagster's storage in PostgreSQL, a database beside the warehouse).
# Eight Berlin KPIs (one run); their SQL alone is timed the same way for the ratio.
DAGSTER_BACKFILL_KPIS = 8


def dagster_backfill(url: str, plans: list[KpiPlan], first: dt.date, last: dt.date) -> None:
    home = Path(tempfile.mkdtemp(prefix="ap-kpi-bench-dagster-"))
    try:
        from analytics_pipelines.cli.dev import dev_instance_yaml, ensure_dagster_database

        (home / "dagster.yaml").write_text(dev_instance_yaml(ensure_dagster_database(url)))
        (home / "store").mkdir()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "STORAGE_URL": f"file://{home / 'store'}",
            "DAGSTER_HOME": str(home),
            "KPI_PARTITIONS_START": first.isoformat(),
        }
        env.pop("CATALOG_DIR", None)
        script = Path(sys.executable).with_name("analytics-pipelines")
        kpis = [arg for plan in plans for arg in ("--kpi", plan.name)]
        done = subprocess.run(
            [str(script), "refresh", "--no-ingest", "--from", first.isoformat(),
             "--to", last.isoformat(), *kpis],
            env=env, capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"refresh failed: {done.stdout}{done.stderr[-2000:]}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def late_row_refresh(
    warehouse: Warehouse, plans: list[KpiPlan], late: dt.date, today: dt.date
) -> dict[str, int]:
    """Refresh what a late row on `late` changes, as the sensor would; days per KPI."""
    by_name = {plan.name: plan for plan in plans}
    counts: dict[str, int] = {}
    for plan in plans:
        days: set[dt.date] = set()
        for source in kpi_sources(by_name, plan.name):
            days |= refreshed_days(by_name, plan.name, source.name, {late}, today)
        counts[plan.name] = len(days)
        for low, high in contiguous_ranges(days):
            refresh_kpi(warehouse, plan, low, high)
    return counts


def timed(repeats: int, action: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def one_day(warehouse: Warehouse, plan: KpiPlan, repeats: int) -> float:
    """Median seconds to refresh TARGET_DAY of one KPI."""
    return timed(repeats, lambda: refresh_kpi(warehouse, plan, TARGET_DAY, TARGET_DAY))


def run(rows_per_day: int, repeats: int) -> list[tuple[str, float, str, str, bool]]:
    catalog = load_catalog(DEMO_CATALOG_DIR)
    plans = ordered(plan_catalog(catalog))
    results: list[tuple[str, float, str, str, bool]] = []
    with database() as url:
        migrate(url)
        warehouse = Warehouse(url)
        try:
            reset_tables(warehouse, catalog)
            load_history(warehouse, catalog, rows_per_day, 0, 1)
            for source in catalog.sources.values():
                if source.kind == "events":
                    ensure_event_time_index(warehouse, source)
            refresh_all(warehouse, plans, TARGET_DAY, TARGET_DAY)  # warm-up: views, caches
            one_year = timed(repeats, lambda: refresh_all(warehouse, plans, TARGET_DAY, TARGET_DAY))
            windowed_plans = [p for p in plans if p.kpi.window is not None]
            one_year_windows = {p.name: one_day(warehouse, p, repeats) for p in windowed_plans}
            group_by = timed(repeats, lambda: full_table_group_by(warehouse, plans))
            first = TARGET_DAY - dt.timedelta(days=364)
            backfill = timed(repeats, lambda: refresh_all(warehouse, plans, first, TARGET_DAY))
            berlin = [p for p in plans if p.derived is None and p.kpi.timezone == "Europe/Berlin"][
                :DAGSTER_BACKFILL_KPIS
            ]
            backfill_sql = timed(repeats, lambda: refresh_all(warehouse, berlin, first, TARGET_DAY))
            backfill_dagster = timed(
                repeats, lambda: dagster_backfill(url, berlin, first, TARGET_DAY)
            )

            load_history(warehouse, catalog, rows_per_day, 1, 5)
            refresh_all(warehouse, plans, TARGET_DAY, TARGET_DAY)
            five_years = timed(
                repeats, lambda: refresh_all(warehouse, plans, TARGET_DAY, TARGET_DAY)
            )
            five_year_windows = {p.name: one_day(warehouse, p, repeats) for p in windowed_plans}
            late = TARGET_DAY - dt.timedelta(days=150)
            counts: dict[str, int] = {}
            late_refresh = timed(
                repeats, lambda: counts.update(late_row_refresh(warehouse, plans, late, TARGET_DAY))
            )
        finally:
            warehouse.dispose()
    n = len(plans)
    n_derived = sum(1 for p in plans if p.derived is not None)
    results.append((f"refresh 1 day, {n} KPIs, 1 year history", one_year, "", "", True))
    ratio = five_years / one_year
    results.append(
        (f"refresh 1 day, {n} KPIs, 5 years history", five_years, f"{ratio:.2f}x", "<= 1.5x",
         ratio <= 1.5)
    )  # fmt: skip
    results.append(
        ("baseline: 1 full-table GROUP BY (local day x all dimensions, filter, measure) "
         f"per measure KPI, {n - n_derived} KPIs, 1 year", group_by, "", "", True)
    )  # fmt: skip
    for name, seconds in sorted(five_year_windows.items()):
        # Rolling and to-date KPIs alone: their window reaches back, their cost must not.
        ratio = seconds / one_year_windows[name]
        results.append(
            (f"refresh 1 day of {name} alone, 5 years history (1 year: "
             f"{one_year_windows[name]:.3f} s)", seconds, f"{ratio:.2f}x", "<= 1.5x",
             ratio <= 1.5)
        )  # fmt: skip
    windowed = ", ".join(f"{n} {c}" for n, c in sorted(counts.items()) if c != 1)
    results.append(
        (f"late row on {late} (5 years history): {sum(counts.values())} KPI-days refreshed "
         f"({windowed}; 1 for each other KPI)", late_refresh, "", "", True)
    )  # fmt: skip
    ratio = backfill / group_by
    results.append(
        (f"backfill 365 days in one run, {n} KPIs, all grains", backfill, f"{ratio:.2f}x",
         "<= 3x GROUP BY", ratio <= 3)
    )  # fmt: skip
    results.append(
        (f"the SQL of a 365-day backfill of {len(berlin)} KPIs", backfill_sql, "", "", True)
    )  # fmt: skip
    ratio = backfill_dagster / backfill_sql
    results.append(
        (f"the same backfill as a Dagster run (`analytics-pipelines refresh`, {len(berlin)} "
         "KPIs, a materialisation per partition)", backfill_dagster, f"{ratio:.2f}x",
         "<= 2x its SQL", ratio <= 2)
    )  # fmt: skip
    return results


def markdown(rows: Sequence[tuple[str, float, str, str, bool]], rows_per_day: int) -> str:
    lines = [
        f"KPI benchmark: {rows_per_day} rows per day per events source (3 demo sources), "
        "20,000 customers",
        "",
        "| scenario | seconds | ratio | goal | met |",
        "|---|---:|---:|---|---|",
    ]
    for name, seconds, ratio, goal, met in rows:
        lines.append(f"| {name} | {seconds:.3f} | {ratio} | {goal} | {'yes' if met else 'NO'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small data, one repeat")
    parser.add_argument("--rows-per-day", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    rows_per_day = args.rows_per_day or (200 if args.quick else 2000)
    repeats = args.repeats or (1 if args.quick else 3)
    results = run(rows_per_day, repeats)
    sys.stdout.write(markdown(results, rows_per_day) + "\n")
    return 0 if all(met for *_, met in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
