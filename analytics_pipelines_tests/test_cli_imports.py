"""Read-only commands start fast: they import neither Dagster nor the data-frame libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from analytics_pipelines.lib.storage import LocalFolderStore

HEAVY = ("dagster", "polars", "pandas", "pyarrow", "numpy", "boto3")
# Run a command as the console script does, then report which heavy modules it imported.
PROBE = """
import json, sys
from analytics_pipelines.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
heavy = [m for m in {heavy!r} if m in sys.modules]
sys.stderr.write("\\nPROBE " + json.dumps({{"code": code, "heavy": heavy,
    "sqlalchemy": "sqlalchemy" in sys.modules}}) + "\\n")
"""

READ_ONLY = [
    (["--help"], False),
    (["catalog", "validate"], False),
    (["kpi", "list"], False),
    (["kpi", "show", "gross_revenue", "--format", "json"], True),
    (["files"], True),
    (["files", "--status", "failed", "--format", "json"], True),
    (["health"], True),
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


@pytest.mark.parametrize(
    ("args", "needs_database"), READ_ONLY, ids=lambda a: " ".join(a) if isinstance(a, list) else ""
)
def test_read_only_commands_import_no_heavy_library(
    args: list[str], needs_database: bool, database_url: str, local_store: LocalFolderStore
) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "STORAGE_URL": f"file://{local_store.root}"}
    env.pop("CATALOG_DIR", None)
    result = _probe(args, env)
    assert result["heavy"] == [], f"{' '.join(args)} imported {result['heavy']}"
    assert result["code"] in (0, 1), result  # 1: health may report degraded landing folders
    # Commands that do not touch the database do not even load SQLAlchemy.
    assert result["sqlalchemy"] is needs_database
