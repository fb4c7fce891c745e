"""`analytics-pipelines health` and the Dagster health job report each part's state, bounded in time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from analytics_pipelines.defs.ops.health import platform_health_job
from analytics_pipelines.lib.pgserver import free_port
from analytics_pipelines.resources import ObjectStoreResource, WarehouseResource

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_health(env_overrides: dict[str, str], cwd: Path) -> tuple[int, dict[str, str], float]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env_overrides}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "analytics_pipelines.cli", "health"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, json.loads(result.stdout), time.monotonic() - started


def test_healthy(database_url: str, tmp_path: Path) -> None:
    code, report, _ = run_health(
        {"DATABASE_URL": database_url, "STORAGE_URL": f"file://{tmp_path}"}, tmp_path
    )
    assert (code, report) == (0, {"status": "ok", "db": "ok", "storage": "ok"})


def test_unreachable_database_is_reported_quickly(tmp_path: Path) -> None:
    url = f"postgresql://nobody:pw@127.0.0.1:{free_port()}/x"
    code, report, seconds = run_health(
        {"DATABASE_URL": url, "STORAGE_URL": f"file://{tmp_path}"}, tmp_path
    )
    assert code == 1
    assert report["status"] == "degraded"
    assert report["db"].startswith("database unreachable")
    assert report["storage"] == "ok"
    assert "pw" not in json.dumps(report)
    assert seconds < 20


def test_missing_database_and_missing_bucket(
    database_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    wrong_db = (
        sa.make_url(database_url).set(database="no_such_db").render_as_string(hide_password=False)
    )
    code, report, _ = run_health(
        {
            "DATABASE_URL": wrong_db,
            "STORAGE_URL": "s3://missing-bucket/x",
            "S3_ENDPOINT_URL": s3_endpoint,
            "S3_ACCESS_KEY_ID": "testing",
            "S3_SECRET_ACCESS_KEY": "testing",
        },
        tmp_path,
    )
    assert code == 1
    assert report["status"] == "degraded"
    assert 'database "no_such_db" does not exist' in report["db"]
    assert report["storage"] == "bucket 'missing-bucket' does not exist"


def test_health_job_in_dagster(database_url: str, tmp_path: Path) -> None:
    good = platform_health_job.execute_in_process(
        resources={
            "warehouse": WarehouseResource(database_url=database_url),
            "object_store": ObjectStoreResource(storage_url=f"file://{tmp_path}"),
        }
    )
    assert good.success
    bad = platform_health_job.execute_in_process(
        resources={
            "warehouse": WarehouseResource(database_url=database_url),
            "object_store": ObjectStoreResource(storage_url=f"file://{tmp_path}/absent"),
        },
        raise_on_error=False,
    )
    assert not bad.success
    failure = bad.failure_data_for_node("check_platform_health")
    assert failure is not None
    assert "storage=storage folder" in str(failure.error)
    assert isinstance(platform_health_job, dg.JobDefinition)
