"""Ingestion benchmark: the raw loader and the fused path against `psql \\copy` (the physical
limit of one COPY), PostgreSQL's own floor of file → raw + clean (`bench.floor`) and pandas.

    python -m bench.run            # 2,000,000 rows; memory for a 20 MB and a 2 GB file
    python -m bench.run --quick    # 200,000 rows; memory for a 20 MB and a 200 MB file

Starts its own throwaway PostgreSQL unless DATABASE_URL is set; prints a Markdown table.
Every timed method starts after a CHECKPOINT; the throwaway server runs without autovacuum.
Log lines go to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean import FusedClean, clean_pending
from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.ingest.loader import LoadReport
from analytics_pipelines.lib.logging import configure_logging
from analytics_pipelines.lib.pgserver import LocalPostgres, find_bindir, free_port
from analytics_pipelines.lib.settings import normalise_database_url
from analytics_pipelines.lib.storage import LocalFolderStore, ObjectStore, S3Store
from analytics_pipelines.lib.warehouse import Warehouse
from bench.data import BYTES_PER_ROW, COLUMNS, bench_source, write_orders_csv
from bench.floor import CpuSplit, Floor, cpu_split

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GOAL_RATIO = 0.8
FLOOR_GOAL = 0.9
FLOOR_NEXT_GOAL = 0.85
FUSED = "end to end, fused: file → clean (raw + clean)"
FUSED_NEXT = "end to end, fused: the next file of the source"
FLOOR = "PostgreSQL floor: file → raw + clean (two psql, side by side)"
FLOOR_NEXT = "PostgreSQL floor: the next file (key in place)"
# Where the CPU seconds of each method go (client process / server), for a local server.
_DATADIR: list[Path | None] = [None]


@dataclass
class Result:
    method: str
    rows: int
    seconds: float
    note: str = ""
    # The floor this method is compared with (FLOOR or FLOOR_NEXT).
    floor: str = FLOOR
    cpu: CpuSplit | None = None

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _migrate(url: str) -> None:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")


def _libpq_url(url: str) -> str:
    return "postgresql://" + normalise_database_url(url).split("://", 1)[1]


def _settle(warehouse: Warehouse) -> None:
    """Start each timed method with earlier methods' dirty buffers checkpointed, so no method
    pays for another's writes."""
    with warehouse.connect() as conn:
        try:
            conn.execute(sa.text("CHECKPOINT"))
        except sa.exc.DBAPIError:  # not allowed to this role on a shared server: skip
            conn.rollback()


def _place(store: ObjectStore, source_name: str, csv_path: Path) -> None:
    key = f"landing/{source_name}/{csv_path.name}"
    if isinstance(store, LocalFolderStore):
        target = store.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.hardlink_to(csv_path)
        except OSError:
            shutil.copyfile(csv_path, target)
        store.list(f"landing/{source_name}/")  # hash once, as the sensor's listing would
    else:
        with csv_path.open("rb") as handle:
            store.write(key, handle)


def bench_loader(label: str, store: ObjectStore, warehouse: Warehouse, csv_path: Path) -> Result:
    source = bench_source(f"bench_{uuid.uuid4().hex[:8]}")
    _place(store, source.name, csv_path)
    _settle(warehouse)
    started = time.perf_counter()
    report, cpu = cpu_split(_DATADIR[0], lambda: load_pending(source, store, warehouse))
    elapsed = time.perf_counter() - started
    if report.failures:
        raise RuntimeError(f"bench load failed: {report.failures[0].error}")
    return Result(
        label,
        report.rows,
        elapsed,
        "ledger + COPY + lineage + business dates, one transaction",
        cpu=cpu,
    )


def bench_clean_after(store: ObjectStore, warehouse: Warehouse, csv_path: Path) -> list[Result]:
    """Raw load, then the clean step on its own (rules in polars after the COPY), then both as
    end to end."""
    source = bench_source(f"bench_{uuid.uuid4().hex[:8]}")
    _place(store, source.name, csv_path)
    _settle(warehouse)
    started = time.perf_counter()
    loaded = load_pending(source, store, warehouse)
    between = time.perf_counter()
    report = clean_pending(warehouse, source)
    finished = time.perf_counter()
    return [
        Result(
            "clean step alone, after the raw load",
            report.raw_rows,
            finished - between,
            "raw rows copied out, checked, binary COPY into the new clean table",
        ),
        Result(
            "end to end, sequential: raw, then the clean step",
            loaded.rows,
            finished - started,
            "what a run does without cleaning beside the COPY",
        ),
    ]


def _fused_load(
    source: SourceSpec, store: ObjectStore, warehouse: Warehouse
) -> tuple[LoadReport, float, CpuSplit | None]:
    """One clean-while-loading run, its seconds and CPU split; raises if the fast path declined."""
    _settle(warehouse)
    started = time.perf_counter()
    report, cpu = cpu_split(
        _DATADIR[0],
        lambda: load_pending(source, store, warehouse, clean_while_loading=FusedClean),
    )
    elapsed = time.perf_counter() - started
    if not report.cleaned_file_ids:
        raise RuntimeError("the fused path declined a bench file; see the log")
    return report, elapsed, cpu


def bench_fused(store: ObjectStore, warehouse: Warehouse, csv_path: Path) -> Result:
    source = bench_source(f"bench_{uuid.uuid4().hex[:8]}")
    _place(store, source.name, csv_path)
    report, elapsed, cpu = _fused_load(source, store, warehouse)
    note = "one read; polars validates beside the raw COPY; both committed"
    return Result(FUSED, report.rows, elapsed, note, cpu=cpu)


def bench_fused_next_file(
    store: ObjectStore, warehouse: Warehouse, csv_path: Path, next_path: Path
) -> tuple[Result, SourceSpec, list[int]]:
    """A second file with new keys into the clean table the first one filled: the primary key
    is maintained row by row instead of built once. Also the source and both file ids."""
    source = bench_source(f"bench_{uuid.uuid4().hex[:8]}")
    _place(store, source.name, csv_path)
    first, _, _ = _fused_load(source, store, warehouse)
    _place(store, source.name, next_path)
    report, elapsed, cpu = _fused_load(source, store, warehouse)
    note = "same, into the clean table the first file filled"
    result = Result(FUSED_NEXT, report.rows, elapsed, note, floor=FLOOR_NEXT, cpu=cpu)
    return result, source, first.cleaned_file_ids + report.cleaned_file_ids


def bench_floors(
    floor: Floor, csv_path: Path, next_path: Path, typed: list[tuple[Path, list[str]]], rows: int
) -> list[Result]:
    """PostgreSQL's floor of the first and of the next file (see bench.floor)."""
    first = floor.first_file(csv_path, typed[0])
    later = floor.next_file(csv_path, typed[0], next_path, typed[1])
    if (first.raw_rows, first.clean_rows) != (rows, rows) or (later.raw_rows, later.clean_rows) != (
        2 * rows,
        2 * rows,
    ):
        raise RuntimeError(f"the floor did not load every row: {first}, {later}")
    return [
        Result(
            FLOOR,
            rows,
            first.seconds,
            f"raw side {first.raw_seconds:.2f} s, binary copy + key {first.clean_seconds:.2f} s",
            cpu=first.cpu,
        ),
        Result(
            FLOOR_NEXT,
            rows,
            later.seconds,
            f"raw side {later.raw_seconds:.2f} s, binary copy into the key {later.clean_seconds:.2f} s",
            floor=FLOOR_NEXT,
            cpu=later.cpu,
        ),
    ]


def bench_psql_copy(url: str, warehouse: Warehouse, csv_path: Path, rows: int) -> Result:
    table = f"bench_plain_{uuid.uuid4().hex[:8]}"
    columns = ", ".join(f"{c.name} text" for c in COLUMNS)
    with warehouse.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE public.{table} ({columns})"))
    psql = str(find_bindir() / "psql")
    _settle(warehouse)
    started = time.perf_counter()
    _, cpu = cpu_split(
        _DATADIR[0],
        lambda: subprocess.run(
            [
                psql,
                _libpq_url(url),
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                f"\\copy public.{table} FROM '{csv_path}' WITH (FORMAT csv, HEADER true)",
            ],
            check=True,
        ),
    )
    elapsed = time.perf_counter() - started
    with warehouse.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE public.{table}"))
    return Result("psql \\copy into a plain text table", rows, elapsed, "physical limit", cpu=cpu)


def bench_pandas(warehouse: Warehouse, csv_path: Path, sample: int, rows: int) -> Result:
    import pandas as pd

    table = f"bench_pandas_{uuid.uuid4().hex[:8]}"
    _settle(warehouse)
    started = time.perf_counter()
    frame = pd.read_csv(csv_path, nrows=sample, dtype=str, keep_default_na=False)
    frame.to_sql(table, warehouse.engine, schema="public", index=False, chunksize=10_000)
    elapsed = time.perf_counter() - started
    with warehouse.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE public.{table}"))
    note = f"measured on {sample:,} rows" + (", rate extrapolated" if sample < rows else "")
    return Result("pandas read_csv + to_sql", len(frame), elapsed, note)


def bench_memory(url: str, work: Path, megabytes: int, fused: bool) -> dict[str, float]:
    rows = max(1, megabytes * 1024 * 1024 // BYTES_PER_ROW)
    csv_path = write_orders_csv(work / "data" / f"orders_{megabytes}mb.csv", rows)
    source = f"bench_mem_{uuid.uuid4().hex[:8]}"
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.memory_probe",
            "--file",
            str(csv_path),
            "--store",
            str(work / "memstore"),
            "--source",
            source,
            "--database-url",
            url,
            *(["--fused"] if fused else []),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    ).stdout
    probe = json.loads(output.strip().splitlines()[-1])
    if probe["failures"] or (fused and not probe["cleaned"]):
        raise RuntimeError(f"the memory probe's load did not go through: {probe}")
    return {
        "fused": fused,
        "megabytes": csv_path.stat().st_size / 1e6,
        "rows": probe["rows"],
        "peak_mib": probe["peak_rss_kib"] / 1024,
        "before_mib": probe["rss_before_kib"] / 1024,
        "rate": probe["rows"] / probe["seconds"],
    }


def _s3(work: Path) -> tuple[S3Store, object]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    store = S3Store(
        "bench-bucket",
        "bench",
        endpoint_url=endpoint,
        access_key_id="bench",
        secret_access_key="bench",
    )
    store.client.create_bucket(Bucket="bench-bucket")
    return store, server


def start_server(work: Path) -> tuple[LocalPostgres | None, str]:
    """DATABASE_URL's server, or a throwaway one in `work` (the caller destroys it)."""
    server: LocalPostgres | None = None
    url = os.environ.get("DATABASE_URL")
    if not url:
        _say("starting a throwaway PostgreSQL …")
        # No autovacuum: vacuuming one method's tables would run during the next method.
        server = LocalPostgres(
            work / "pg", free_port(), durable=False, settings={"autovacuum": "off"}
        )
        url = server.start()
    return server, normalise_database_url(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes for a fast run")
    parser.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_ROWS", 0)) or None)
    parser.add_argument("--pandas-rows", type=int, default=200_000, help="pandas sample size")
    parser.add_argument(
        "--memory-mb",
        default=os.environ.get("BENCH_MEMORY_MB"),
        help="small,large file sizes in MB (default 20,2048; quick 20,200)",
    )
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the best of each is kept")
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--work-dir",
        default=os.environ.get("BENCH_WORK_DIR"),
        help="keeps generated files between runs",
    )
    args = parser.parse_args(argv)
    configure_logging()  # log lines to stderr: stdout is the tables'
    rows = args.rows or (200_000 if args.quick else 2_000_000)
    small_mb, large_mb = (
        int(x) for x in (args.memory_mb or ("20,200" if args.quick else "20,2048")).split(",")
    )
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ap-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)

    server, url = start_server(work)
    _DATADIR[0] = server.datadir if server is not None else None
    moto = None
    s3_store: S3Store | None = None
    try:
        _migrate(url)
        warehouse = Warehouse(url)
        _say(f"generating {rows:,} rows …")
        csv_path = write_orders_csv(work / "data" / f"orders_{rows}.csv", rows)
        next_path = write_orders_csv(
            work / "data" / f"orders_{rows}_next.csv", rows, seed=8, first=rows
        )
        for path in (csv_path, next_path):
            path.chmod(0o644)
        local_root = work / "store"
        local_root.mkdir(exist_ok=True)
        if not args.skip_s3:
            s3_store, moto = _s3(work)
        # Rounds in turn, best of each kept: a fresh server's first writes (WAL segments,
        # file extension) and other load on the machine must not favour whoever runs last.
        rounds: list[list[Result]] = []
        floor = Floor(_libpq_url(url), warehouse, work / "data", _DATADIR[0])
        typed: list[tuple[Path, list[str]]] = []
        for round_no in range(1, args.repeat + 1):
            _say(f"round {round_no}/{args.repeat}: psql \\copy, local store, S3 store …")
            batch = [
                bench_psql_copy(url, warehouse, csv_path, rows),
                bench_loader(
                    "raw loader, local folder store",
                    LocalFolderStore(local_root),
                    warehouse,
                    csv_path,
                ),
            ]
            batch += bench_clean_after(LocalFolderStore(local_root), warehouse, csv_path)
            batch.append(bench_fused(LocalFolderStore(local_root), warehouse, csv_path))
            next_file, filled, file_ids = bench_fused_next_file(
                LocalFolderStore(local_root), warehouse, csv_path, next_path
            )
            batch.append(next_file)
            if not typed:  # the rows the fused path stored, typed: what the floor COPYs
                typed = [floor.export(filled, f, f"typed_{i}") for i, f in enumerate(file_ids)]
            _say(f"round {round_no}/{args.repeat}: PostgreSQL's floor …")
            batch += bench_floors(floor, csv_path, next_path, typed, rows)
            if s3_store is not None:
                batch.append(
                    bench_loader(
                        "raw loader, S3 store (moto server)", s3_store, warehouse, csv_path
                    )
                )
            rounds.append(batch)
        results = [min(column, key=lambda r: r.seconds) for column in zip(*rounds, strict=True)]
        _say("pandas …")
        results.append(bench_pandas(warehouse, csv_path, min(args.pandas_rows, rows), rows))
        memory = []
        if not args.skip_memory:
            for fused in (False, True):
                for megabytes in (small_mb, large_mb):
                    _say(f"memory, {megabytes} MB file{', fused' if fused else ''} …")
                    memory.append(bench_memory(url, work, megabytes, fused))
        warehouse.dispose()
        print(render(results, memory, rows, csv_path, args.repeat))
        return 0
    finally:
        if moto is not None:
            moto.stop()  # type: ignore[attr-defined]
        if server is not None:
            server.destroy()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def render(
    results: list[Result],
    memory: list[dict[str, float]],
    rows: int,
    csv_path: Path,
    repeat: int = 1,
) -> str:
    psql_rate = results[0].rate
    floors = {r.method: r.seconds for r in results if r.method in (FLOOR, FLOOR_NEXT)}

    def x_floor(r: Result) -> float:
        # Rates, not seconds: pandas is measured on a sample of the rows.
        return r.rate * floors[r.floor] / rows if r.floor in floors else float("nan")

    lines = [
        f"### Raw load of an orders CSV ({rows:,} rows, 10 columns, {csv_path.stat().st_size / 1e6:,.0f} MB)",
        "",
        f"Best of {repeat} round(s) per method, same file and database. x floor: against"
        " PostgreSQL's floor of file → raw + clean (the next file: against its own floor).",
        " CPU: seconds this process (and its psql children) / the server's processes spent.",
        "",
        "| method | rows measured | seconds | rows/s | x psql \\copy | x floor | CPU client / server (s) | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        cpu = f"{r.cpu.client:.2f} / {r.cpu.server:.2f}" if r.cpu else ""
        lines.append(
            f"| {r.method} | {r.rows:,} | {r.seconds:.2f} | {r.rate:,.0f} | {r.rate / psql_rate:.2f}"
            f" | {x_floor(r):.2f} | {cpu} | {r.note} |"
        )
    local = next(r for r in results if "local" in r.method)
    verdict = "meets" if local.rate >= GOAL_RATIO * psql_rate else "MISSES"
    lines += [
        "",
        f"Local-store load is {local.rate / psql_rate:.2f}x psql \\copy: {verdict} the goal of ≥ {GOAL_RATIO}x.",
    ]
    for method, goal in ((FUSED, FLOOR_GOAL), (FUSED_NEXT, FLOOR_NEXT_GOAL)):
        fused = next((r for r in results if r.method == method), None)
        if fused is not None and fused.floor in floors:
            ok = "meets" if x_floor(fused) >= goal else "MISSES"
            lines.append(
                f"{method}: {x_floor(fused):.2f}x its floor ({fused.rate / psql_rate:.2f}x psql"
                f" \\copy): {ok} the goal of ≥ {goal}x."
            )
            floor_cpu = next((r.cpu for r in results if r.method == fused.floor), None)
            if fused.cpu is not None and floor_cpu is not None:
                # With both cores busy all along (a quiet machine) the wall ratio tends to the
                # ratio of CPU seconds, which other load on the machine disturbs far less.
                ours, theirs = (
                    fused.cpu.client + fused.cpu.server,
                    floor_cpu.client + floor_cpu.server,
                )
                lines.append(
                    f"  CPU seconds: {fused.cpu.client:.2f} client + {fused.cpu.server:.2f} server"
                    f" against the floor's {theirs:.2f}: {theirs / ours:.2f}x the floor by CPU."
                )
    if memory:
        lines += [
            "",
            "### Loader peak memory (separate process, local store)",
            "",
            "| load | file | rows | peak RSS (MiB) | RSS before load (MiB) | rows/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for m in memory:
            lines.append(
                f"| {'fused: raw + clean' if m['fused'] else 'raw'} | {m['megabytes']:,.0f} MB"
                f" | {m['rows']:,} | {m['peak_mib']:.0f} | {m['before_mib']:.0f} | {m['rate']:,.0f} |"
            )
        lines.append("")
        for small, large in zip(memory[::2], memory[1::2], strict=True):
            growth = large["peak_mib"] - small["peak_mib"]
            ok = "meets" if growth <= 100 else "MISSES"
            lines.append(
                f"{'Fused' if small['fused'] else 'Raw'} load: peak grows by {growth:.0f} MiB from"
                f" the small to the large file: {ok} the goal of ≤ 100 MiB."
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
