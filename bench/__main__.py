"""`make bench`: every benchmark in one go, each printing its Markdown table.

python -m bench            # full sizes (2,000,000-row load, 2 GB memory probe, 1y/5y KPI history)
python -m bench --quick    # small sizes, for a smoke run
"""

from __future__ import annotations

import sys

from bench import kpi_bench, run


def main(argv: list[str]) -> int:
    quick = ["--quick"] if "--quick" in argv else []
    status = run.main(quick)
    return status or kpi_bench.main(quick)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
