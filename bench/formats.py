"""File → clean for every format: the orders rows as CSV, JSON lines, Parquet and Excel, and a
correction (a new version of a file whose rows are already in clean).

    python -m bench.formats            # 2,000,000 rows (Excel: 100,000, see EXCEL_ROWS)
    python -m bench.formats --quick    # 200,000 rows (Excel: 20,000)

Each method is what a run does for one new file version: the raw load with cleaning beside it
(`load_pending(..., clean_while_loading=FusedClean)`), then the clean stage (`clean_pending`) for what
was left to it, timed together. Ratios are against `psql \\copy` of the CSV on the same server,
per row. Starts its own throwaway PostgreSQL unless DATABASE_URL is set. Log lines go to
stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import polars as pl

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean import FusedClean, clean_pending
from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.storage import LocalFolderStore
from analytics_pipelines.lib.warehouse import Warehouse
from bench.data import bench_source, write_orders_csv
from bench.run import Result, _migrate, _place, _say, _settle, bench_psql_copy, start_server

# A sheet holds at most 1,048,575 data rows, so Excel cannot have the 2M rows of the others.
# 100,000 by default: the figure before calamine was taken at that size, and openpyxl takes
# minutes to write the test workbook of 1M rows (`--excel-rows 1000000` measures that).
EXCEL_ROWS = 100_000


def write_jsonl(csv_path: Path) -> Path:
    path = csv_path.with_suffix(".jsonl")
    if not path.exists():
        pl.scan_csv(csv_path).sink_ndjson(path)
    return path


def write_parquet(csv_path: Path) -> Path:
    path = csv_path.with_suffix(".parquet")
    if not path.exists():
        pl.scan_csv(csv_path).sink_parquet(path)
    return path


def write_xlsx(csv_path: Path, rows: int) -> Path:
    from openpyxl import Workbook

    path = csv_path.with_name(f"{csv_path.stem}_{rows}.xlsx")
    if path.exists():
        return path
    frame = pl.read_csv(csv_path, n_rows=rows, infer_schema=False)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("orders")
    sheet.append(frame.columns)
    for values in frame.iter_rows():
        sheet.append(list(values))
    workbook.save(path)
    return path


def write_correction(csv_path: Path) -> Path:
    """The same keys with every quantity changed: a corrected delivery of the whole file."""
    path = csv_path.with_name(f"{csv_path.stem}_corrected.csv")
    if not path.exists():
        pl.scan_csv(csv_path, infer_schema=False).with_columns(
            quantity=(pl.col("quantity").cast(pl.Int64) + 1).cast(pl.String)
        ).sink_csv(path)
    return path


def _source(fmt: str) -> SourceSpec:
    source = bench_source(f"bench_{fmt}_{uuid.uuid4().hex[:8]}")
    return source.model_copy(update={"format": fmt})


def _file_to_clean(
    warehouse: Warehouse, store: LocalFolderStore, source: SourceSpec
) -> tuple[int, float, str]:
    """Rows, seconds and the split (raw load, clean step) of one version from file to clean."""
    _settle(warehouse)
    started = time.perf_counter()
    report = load_pending(source, store, warehouse, clean_while_loading=FusedClean)
    loaded = time.perf_counter()
    clean_pending(warehouse, source)
    finished = time.perf_counter()
    if report.failures:
        raise RuntimeError(f"bench load failed: {report.failures[0].error}")
    beside = "cleaned beside the COPY" if report.cleaned_file_ids else "clean step after it"
    split = f"raw load {loaded - started:.2f} s + clean step {finished - loaded:.2f} s ({beside})"
    return report.rows, finished - started, split


def bench_format(
    label: str, fmt: str, path: Path, warehouse: Warehouse, store: LocalFolderStore
) -> Result:
    source = _source(fmt)
    _place(store, source.name, path)
    rows, elapsed, split = _file_to_clean(warehouse, store, source)
    return Result(label, rows, elapsed, f"{path.stat().st_size / 1e6:.0f} MB; {split}")


def bench_correction(
    csv_path: Path, corrected: Path, warehouse: Warehouse, store: LocalFolderStore
) -> Result:
    source = _source("csv")
    _place(store, source.name, csv_path)
    _file_to_clean(warehouse, store, source)
    # The same object key with new content: a new version that supersedes the first.
    target = store.root / f"landing/{source.name}/{csv_path.name}"
    target.unlink()
    shutil.copyfile(corrected, target)
    store.list(f"landing/{source.name}/")
    rows, elapsed, split = _file_to_clean(warehouse, store, source)
    return Result(
        "correction: a new version of a file already in clean",
        rows,
        elapsed,
        f"its predecessor's rows leave clean; {split}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--excel-rows", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--only", default="", help="comma-separated: csv,jsonl,parquet,xlsx,correction"
    )
    parser.add_argument("--work-dir", default=os.environ.get("BENCH_WORK_DIR"))
    args = parser.parse_args(argv)
    rows = args.rows or (200_000 if args.quick else 2_000_000)
    excel_rows = args.excel_rows or (20_000 if args.quick else EXCEL_ROWS)
    only = set(filter(None, args.only.split(",")))
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ap-bench-formats-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    server, url = start_server(work)
    try:
        _migrate(url)
        warehouse = Warehouse(url)
        _say(f"generating {rows:,} rows in every format …")
        csv_path = write_orders_csv(work / "data" / f"orders_{rows}.csv", rows)
        methods: dict[str, Callable[[LocalFolderStore], Result]] = {
            "csv": lambda s: bench_format("CSV, first load", "csv", csv_path, warehouse, s),
            "jsonl": lambda s: bench_format(
                "JSON lines", "jsonl", write_jsonl(csv_path), warehouse, s
            ),
            "parquet": lambda s: bench_format(
                "Parquet", "parquet", write_parquet(csv_path), warehouse, s
            ),
            "xlsx": lambda s: bench_format(
                f"Excel ({excel_rows:,} rows)",
                "xlsx",
                write_xlsx(csv_path, excel_rows),
                warehouse,
                s,
            ),
            "correction": lambda s: bench_correction(
                csv_path, write_correction(csv_path), warehouse, s
            ),
        }
        chosen = [name for name in methods if not only or name in only]
        root = work / "store"
        root.mkdir(exist_ok=True)
        rounds: list[list[Result]] = []
        for round_no in range(1, args.repeat + 1):
            _say(f"round {round_no}/{args.repeat}: {', '.join(chosen)} …")
            batch = [bench_psql_copy(url, warehouse, csv_path, rows)]
            for name in chosen:
                _say(f"  {name}")
                batch.append(methods[name](LocalFolderStore(root)))
            rounds.append(batch)
        results = [min(column, key=lambda r: r.seconds) for column in zip(*rounds, strict=True)]
        warehouse.dispose()
        print(render(results, args.repeat))
        return 0
    finally:
        if server is not None:
            server.destroy()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def render(results: list[Result], repeat: int) -> str:
    psql_rate = results[0].rate
    lines = [
        "### File → clean by format (raw load, cleaning, de-duplication, quarantine)",
        "",
        f"Best of {repeat} round(s) per method, same server.",
        "",
        "| method | rows | seconds | rows/s | x psql \\copy | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.method} | {r.rows:,} | {r.seconds:.2f} | {r.rate:,.0f} | "
            f"{r.rate / psql_rate:.2f} | {r.note} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
