"""Drop-to-KPI latency in `make dev`: how long after a file lands do its KPIs show the new numbers?

Starts the real dev stack (`analytics-pipelines dev`: its own PostgreSQL, local storage, the demo
data, `dg dev` with the daemon and sensors) in a scratch folder, waits until the demo data has
gone through, then drops small orders files one at a time. Each file holds orders of one day
not yet in the data; the latency is the time from the end of the copy until `kpi.kpi_values`
holds that day's `gross_revenue` (polled every 0.2 s).

A file feeds more than one KPI: the day's values come in one run, the rolling and to-date windows
the day reaches in runs of their own. So the bench also waits until every run the drop set off
(the landing run and the KPI sensor's runs) has ended, and reports that as "every KPI": the time
until no KPI the file touches is still being computed. Goal: its median ≤ 15 s for the daily
delivery.

Two kinds of drop, N of each:

* the daily delivery: the orders of a recent day (the N days before today, oldest first), whose
  windows reach a few days up to today;
* a late file: a day just after the demo's span, months back, whose year-to-date values are
  repainted up to today. Its window run spans hundreds of daily partitions, and Dagster stores a
  planned-materialisation event per partition when it creates such a run: that bookkeeping, not
  our SQL, is what this row adds.

    python -m bench.latency_bench [--drops 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from analytics_pipelines.cli.dev import DEMO_DAYS, DEMO_START
from analytics_pipelines.lib.pgserver import LocalPostgres, free_port
from analytics_pipelines.lib.settings import normalise_database_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 15.0
KPI = "gross_revenue"
ZONE = ZoneInfo("Europe/Berlin")
# Late files: days after the demo's (make dev's own span), each drop a day of its own.
FIRST_LATE_DAY = DEMO_START + dt.timedelta(days=DEMO_DAYS + 1)
DAILY = "the daily delivery"
LATE = "a late file (months back)"
# A drop's runs come from these sensors; ML refits and schedules are not part of its latency.
DROP_SENSORS = ("landing_orders", "kpi_invalidation_sensor")
# Longer than the sensor daemon's 5 s loop: no new run for this long, the drop has set off all.
NO_NEW_RUN_SECONDS = 8.0
SETTLE_SECONDS = 20.0  # no new KPI value for this long: the demo load is through
STARTUP_TIMEOUT = 600.0
DROP_TIMEOUT = 180.0


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _orders_csv(day: dt.date, drop: int, lines: int = 40) -> bytes:
    rows = [
        "order_id,line_no,ordered_at,customer_id,region,channel,product_sku,quantity,unit_price,discount,status"
    ]
    for i in range(lines):
        at = dt.datetime.combine(day, dt.time(9 + i % 10, i % 60), ZONE).isoformat()
        rows.append(
            f"ORD-{90000000 + drop * 1000 + i:08d},1,{at},C{i % 50},"
            f"{('north', 'south', 'east', 'west')[i % 4]},web,SKU{i % 20},{1 + i % 3},"
            f"{10 + i % 7}.50,0,placed"
        )
    return ("\n".join(rows) + "\n").encode()


def _wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"dev stopped early:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    raise RuntimeError(f"no {text!r} after {seconds:.0f} s:\n{log.read_text()[-3000:]}")


def _latest_value_at(engine: sa.Engine) -> dt.datetime | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT max(computed_at) FROM kpi.kpi_values"),
        ).scalar()


def _settle(engine: sa.Engine, process: subprocess.Popen[bytes]) -> None:
    """Wait until KPI values exist and none was written for SETTLE_SECONDS."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last, quiet_since = None, time.monotonic()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("dev stopped while the demo data was loading")
        try:
            current = _latest_value_at(engine)
        except sa.exc.DBAPIError:  # migrations not applied yet
            current = None
        if current != last:
            last, quiet_since = current, time.monotonic()
        elif current is not None and time.monotonic() - quiet_since >= SETTLE_SECONDS:
            return
        time.sleep(1.0)
    raise RuntimeError("the demo data did not settle")


def _day_value_written(engine: sa.Engine, day: dt.date) -> bool:
    start = dt.datetime.combine(day, dt.time(0), ZONE)
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM kpi.kpi_values WHERE kpi = :kpi AND grain = 'day' "
                    "AND period_start = :start AND dimensions = '{}'::jsonb"
                ),
                {"kpi": KPI, "start": start},
            ).scalar()
        )


def _runs_rows(dagster: sa.Engine, since: float) -> list[sa.Row[Any]]:
    """Each Dagster run created after `since` (epoch s): its phases, sensor and partition."""
    with dagster.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT extract(epoch FROM r.create_timestamp AT TIME ZONE 'UTC')::float8 "
                    "AS created, r.start_time, r.end_time, r.status, t.value AS sensor, "
                    "p.value AS partition FROM runs r "
                    "LEFT JOIN run_tags t ON t.run_id = r.run_id AND t.key = 'dagster/sensor_name' "
                    "LEFT JOIN run_tags p ON p.run_id = r.run_id AND p.key = 'dagster/partition' "
                    "WHERE r.create_timestamp >= to_timestamp(:since) AT TIME ZONE 'UTC' "
                    "ORDER BY r.create_timestamp"
                ),
                {"since": since},
            ).all()
        )


def _runs_since(dagster: sa.Engine, since: float) -> list[str]:
    """Where a drop's time went: each Dagster run begun after it, with its sensor and phases."""
    return [
        f"  {row.sensor or 'no sensor'}: queued +{row.created - since:.1f} s"
        + (f", started +{row.start_time - since:.1f} s" if row.start_time else "")
        + (f", ended +{row.end_time - since:.1f} s" if row.end_time else "")
        + f" ({row.status}{', partition ' + row.partition if row.partition else ''})"
        for row in _runs_rows(dagster, since)
    ]


def _drop_runs_done(dagster: sa.Engine, since: float) -> float | None:
    """When the last run the drop set off ended (epoch s), or None while one is still to come."""
    rows = [row for row in _runs_rows(dagster, since) if row.sensor in DROP_SENSORS]
    if not rows or any(row.end_time is None for row in rows):
        return None
    if time.time() - max(row.created for row in rows) < NO_NEW_RUN_SECONDS:
        return None
    return float(max(row.end_time for row in rows))


def _drop(
    storage: Path, engine: sa.Engine, dagster: sa.Engine, log: Path, day: dt.date, serial: int
) -> tuple[float, float, float]:
    """Drop one file of `day` (order ids from `serial`): seconds until its `gross_revenue`, and
    until every run it set off has ended; and when it was dropped (epoch s)."""
    target = storage / "landing" / "orders" / f"latency_{day.isoformat()}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = storage / f".{target.name}.part"  # outside the landing prefix
    if _day_value_written(engine, day):  # a latency of 0 would measure nothing
        raise RuntimeError(f"{day} already has a {KPI} value before its drop")
    partial.write_bytes(_orders_csv(day, serial))
    partial.rename(target)  # the file appears whole, as an upload to S3 does
    dropped, dropped_at = time.monotonic(), time.time()
    while not _day_value_written(engine, day):
        if time.monotonic() - dropped > DROP_TIMEOUT:
            runs = "\n".join(_runs_since(dagster, dropped_at))
            raise RuntimeError(
                f"{target.name}: no {KPI} value after {DROP_TIMEOUT:.0f} s; runs since "
                f"the drop:\n{runs}\nend of the dev log:\n"
                f"{log.read_text(errors='replace')[-6000:]}"
            )
        time.sleep(0.2)
    first = time.monotonic() - dropped
    while (done_at := _drop_runs_done(dagster, dropped_at)) is None:
        if time.monotonic() - dropped > DROP_TIMEOUT:
            runs = "\n".join(_runs_since(dagster, dropped_at))
            raise RuntimeError(f"{target.name}: runs not done after {DROP_TIMEOUT:.0f} s:\n{runs}")
        time.sleep(0.5)
    return first, done_at - dropped_at, dropped_at


def measure(drops: int) -> dict[str, tuple[list[float], list[float]]]:
    """Per kind of drop: the seconds until the day's `gross_revenue`, and until every KPI."""
    work = Path(tempfile.mkdtemp(prefix="ap-latency-"))
    work.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    server = LocalPostgres(work / "pg", free_port(), durable=False)
    url = normalise_database_url(server.start())
    project = work / "project"
    project.mkdir()
    for name in ("alembic.ini", "migrations"):
        (project / name).symlink_to(PROJECT_ROOT / name)
    storage = work / "storage"
    storage.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DAGSTER_HOME", "CATALOG_DIR", "KPI_PARTITIONS_START")
    }
    env.update({"DATABASE_URL": url, "STORAGE_URL": f"file://{storage}"})
    log = work / "dev.log"
    script = Path(sys.executable).with_name("analytics-pipelines")
    with log.open("wb") as sink:
        dev = subprocess.Popen(
            [str(script), "dev", "--port", str(free_port())],
            cwd=project,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    engine = sa.create_engine(url)
    dagster = sa.create_engine(sa.make_url(url).set(database="dagster"))
    results: dict[str, tuple[list[float], list[float]]] = {}
    try:
        _wait_for_line(log, "Dagster UI on", dev, STARTUP_TIMEOUT)
        _say("dev stack up; waiting for the demo data to go through …")
        _settle(engine, dev)
        today = dt.datetime.now(ZONE).date()
        kinds = {
            DAILY: [today - dt.timedelta(days=drops - i) for i in range(drops)],
            LATE: [FIRST_LATE_DAY + dt.timedelta(days=i) for i in range(drops)],
        }
        serial = 0
        for kind, days in kinds.items():
            results[kind] = ([], [])
            for drop, day in enumerate(days):
                first, every, dropped_at = _drop(storage, engine, dagster, log, day, serial)
                serial += 1
                results[kind][0].append(first)
                results[kind][1].append(every)
                _say(
                    f"{kind}, drop {drop + 1}/{drops} ({day}): {KPI} in {first:.1f} s, "
                    f"every KPI in {every:.1f} s"
                )
                for line in _runs_since(dagster, dropped_at):
                    _say(line)
    finally:
        engine.dispose()
        dagster.dispose()
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGINT)
            try:
                dev.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
        server.destroy()
        shutil.rmtree(work, ignore_errors=True)
    return results


def _row(label: str, latencies: list[float]) -> str:
    median = statistics.median(latencies)
    return (
        f"| {label} | {median:.1f} s | {min(latencies):.1f} s | {max(latencies):.1f} s | "
        f"{'met' if median <= GOAL_SECONDS else 'missed'} |"
    )


def markdown(results: dict[str, tuple[list[float], list[float]]]) -> str:
    drops = len(results[DAILY][0])
    lines = [
        f"### Drop-to-KPI latency in make dev ({drops} drops of each kind; goal: every KPI of "
        f"the daily delivery, median ≤ {GOAL_SECONDS:.0f} s)",
        "",
        "| drop | stored | median | best | worst | ≤ 15 s |",
        "|---|---|---:|---:|---:|---|",
    ]
    for kind, (first_kpi, every_kpi) in results.items():
        lines.append(_row(f"{kind} | the day's `{KPI}`", first_kpi))
        lines.append(_row(f"{kind} | every KPI the file touches (its runs ended)", every_kpi))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--drops", type=int, default=5, help="drops of each kind")
    parser.add_argument("--quick", action="store_true", help="two drops of each kind")
    args = parser.parse_args(argv)
    results = measure(2 if args.quick else args.drops)
    sys.stdout.write(markdown(results) + "\n")
    return 0 if statistics.median(results[DAILY][1]) <= GOAL_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
