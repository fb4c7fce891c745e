"""CLI start-up: wall time and peak memory of the read-only commands, as a user runs them.

Each command runs as a subprocess of the installed `analytics-pipelines` entry point against a
throwaway PostgreSQL (or DATABASE_URL) and a local storage folder. Reported: median and best
wall time of N runs, CPU time and peak RSS of the median run; the goal is ≤ 1.0 s wall each.

    python -m bench.cli_bench [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.run import _migrate, _say

GOAL_SECONDS = 1.0
COMMANDS = [
    ["--help"],
    ["catalog", "validate"],
    ["kpi", "list"],
    ["kpi", "show", "gross_revenue", "--format", "json"],
    ["files"],
    ["health"],
]


@dataclass
class Timing:
    command: str
    median_s: float
    best_s: float
    cpu_s: float
    peak_rss_mib: float | None

    @property
    def met(self) -> bool:
        return self.median_s <= GOAL_SECONDS


def _entry_point() -> list[str]:
    script = Path(sys.executable).with_name("analytics-pipelines")
    return [str(script)] if script.exists() else [sys.executable, "-m", "analytics_pipelines.cli"]


# GNU time reports the command's own peak RSS; a child's rusage would also count the pages
# it shared with this (much larger) benchmark process before exec.
GNU_TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None


class CommandFailed(RuntimeError):
    """A timed command did not do its job: a fast failure is not a fast command."""


def _check(argv: list[str], env: dict[str, str]) -> None:
    """Run the command once, as the user would, and insist that it succeeded."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or "Traceback" in done.stderr:
        raise CommandFailed(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-600:]}"
        )


def _run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, float | None]:
    """Wall seconds, CPU seconds and peak RSS (MiB, when GNU time is there) of one run."""
    report = None
    if GNU_TIME is not None:
        report = tempfile.NamedTemporaryFile(suffix=".rss")  # noqa: SIM115
        argv = ["/usr/bin/time", "-f", "%M", "-o", report.name, *argv]
    started = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = 0  # reaped by wait4
    peak = None
    if report is not None:
        with report:
            text = Path(report.name).read_text().strip().splitlines()
        peak = int(text[-1]) / 1024 if text and text[-1].isdigit() else None
    return wall, usage.ru_utime + usage.ru_stime, peak


def measure(env: dict[str, str], repeat: int) -> list[Timing]:
    entry = _entry_point()
    results = []
    for command in COMMANDS:
        _check([*entry, *command], env)  # also warms the page cache and .pyc files
        runs = sorted(_run_once([*entry, *command], env) for _ in range(repeat))
        median = runs[len(runs) // 2]
        results.append(
            Timing(
                " ".join(command),
                statistics.median(r[0] for r in runs),
                runs[0][0],
                median[1],
                median[2],
            )
        )
    return results


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MiB"


def markdown(results: list[Timing], repeat: int) -> str:
    lines = [
        f"### CLI start-up (median of {repeat}; goal ≤ {GOAL_SECONDS:.1f} s wall)",
        "",
        "| command | median wall | best wall | CPU | peak RSS | goal |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| `analytics-pipelines {r.command}` | {r.median_s:.2f} s | {r.best_s:.2f} s "
            f"| {r.cpu_s:.2f} s | {_mib(r.peak_rss_mib)} | {'met' if r.met else 'missed'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="three runs each")
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else args.repeat

    from analytics_pipelines.lib.pgserver import LocalPostgres, free_port
    from analytics_pipelines.lib.settings import normalise_database_url

    work = Path(tempfile.mkdtemp(prefix="ap-cli-bench-"))
    work.chmod(0o755)
    server = None
    url = os.environ.get("DATABASE_URL")
    try:
        if not url:
            _say("starting a throwaway PostgreSQL …")
            server = LocalPostgres(work / "pg", free_port(), durable=False)
            url = server.start()
        url = normalise_database_url(url)
        _migrate(url)
        (work / "store").mkdir()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "STORAGE_URL": f"file://{work / 'store'}",
        }
        _say(f"timing {len(COMMANDS)} commands, {repeat} runs each …")
        results = measure(env, repeat)
    finally:
        if server is not None:
            server.destroy()
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.write(markdown(results, repeat) + "\n")
    return 0 if all(r.met for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
