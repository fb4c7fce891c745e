"""`make bench`: every benchmark in one go, each printing its Markdown table.

python -m bench            # full sizes (2,000,000-row load, 2 GB memory probe, 1y/5y KPI history)
python -m bench --quick    # small sizes, for a smoke run
python -m bench.formats    # only file → clean for each format and a correction
python -m bench.cli_bench  # only the CLI start-up table
python -m bench.latency_bench  # only the drop-to-KPI latency of make dev
python -m bench.ml_bench   # only the forecasts and anomaly flags (lib/ml)
python -m bench.raw_cost CSV [ROUNDS]  # only the server cost of each raw-table feature (issue #21)
"""

from __future__ import annotations

import sys

from bench import cli_bench, formats, kpi_bench, latency_bench, ml_bench, run


def main(argv: list[str]) -> int:
    quick = ["--quick"] if "--quick" in argv else []
    status = run.main(quick)
    status = formats.main(quick) or status
    status = kpi_bench.main(quick) or status
    status = cli_bench.main(quick) or status
    status = ml_bench.main(quick) or status
    return latency_bench.main(quick) or status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
