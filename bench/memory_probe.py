"""Child process of the benchmark: load one CSV from a local store (raw only, or cleaned beside
its COPY with `--fused`), report peak RSS as JSON."""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

from analytics_pipelines.lib.clean import FusedClean
from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.storage import LocalFolderStore
from analytics_pipelines.lib.warehouse import Warehouse
from bench.data import bench_source


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _peak_kib() -> int:
    # VmHWM starts afresh at exec; ru_maxrss would carry over the parent's peak from before fork.
    return _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--fused", action="store_true", help="clean beside the COPY too")
    args = parser.parse_args()
    source = bench_source(args.source)
    store = LocalFolderStore(args.store)
    target = Path(args.store) / source.landing_prefix / Path(args.file).name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        try:
            target.hardlink_to(args.file)
        except OSError:
            shutil.copyfile(args.file, target)
    warehouse = Warehouse(args.database_url, pool_size=2)
    store.list(source.landing_prefix)  # the etag (MD5) of a local file is computed on listing
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    report = load_pending(
        source, store, warehouse, clean_while_loading=FusedClean if args.fused else None
    )
    elapsed = time.perf_counter() - started
    peak = _peak_kib()
    json.dump(
        {
            "rows": report.rows,
            "failures": [o.error for o in report.failures],
            "cleaned": bool(report.cleaned_file_ids),
            "seconds": elapsed,
            "rss_before_kib": before,
            "peak_rss_kib": peak,
        },
        sys.stdout,
    )
    warehouse.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
