"""Read-only commands start fast: they import neither Dagster, nor the data-frame libraries, nor
SQLAlchemy (the ones that read the database do it through psycopg2 alone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from analytics_pipelines.lib.storage import LocalFolderStore

HEAVY = ("dagster", "polars", "pandas", "pyarrow", "numpy", "boto3", "sqlalchemy")
# Run a command as the console script does, then report which heavy modules it imported.
PROBE = """
import json, sys
from analytics_pipelines.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
heavy = [m for m in {heavy!r} if m in sys.modules]
sys.stderr.write("\\nPROBE " + json.dumps({{"code": code, "heavy": heavy}}) + "\\n")
"""

READ_ONLY = [
    ["--help"],
    ["catalog", "validate"],
    ["kpi", "list"],
    ["kpi", "show", "gross_revenue", "--format", "json"],
    ["kpi", "anomalies", "gross_revenue", "--json"],
    ["files"],
    ["files", "--status", "failed", "--format", "json"],
    ["health"],
    ["access", "show"],
]


def _probe(args: list[str], env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("PROBE "))
    return json.loads(line.removeprefix("PROBE "))


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_read_only_commands_import_no_heavy_library(
    args: list[str], database_url: str, local_store: LocalFolderStore
) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "STORAGE_URL": f"file://{local_store.root}"}
    env.pop("CATALOG_DIR", None)
    result = _probe(args, env)
    assert result["heavy"] == [], f"{' '.join(args)} imported {result['heavy']}"
    assert result["code"] in (0, 1), result  # 1: health may report degraded landing folders


@pytest.mark.parametrize(
    "args", [["kpi", "show", "gross_revenue"], ["files"], ["files", "retry", "orders", "a.csv"]]
)
def test_an_unreachable_database_is_one_line_not_a_traceback(
    args: list[str], local_store: LocalFolderStore
) -> None:
    env = {
        **os.environ,
        # Port 1 on the loopback: nothing listens, the connection is refused at once.
        "DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:1/analytics",
        "STORAGE_URL": f"file://{local_store.root}",
    }
    env.pop("CATALOG_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "analytics_pipelines.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("database unreachable (connection to server at")
    assert "Traceback" not in done.stderr and "secret" not in done.stderr
