"""`analytics-pipelines health` and the Dagster health job report each part's state, bounded in time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from analytics_pipelines.defs.ops.health import platform_health_job
from analytics_pipelines.lib.health import check_health, landing_problems
from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.pgserver import free_port
from analytics_pipelines.lib.storage import LocalFolderStore
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import ObjectStoreResource, WarehouseResource
from analytics_pipelines_tests.conftest import world_readable_tempdir
from analytics_pipelines_tests.test_file_alerts import GOOD, RAGGED
from analytics_pipelines_tests.test_files_cli import write_catalog
from analytics_pipelines_tests.test_ingest_helpers import by_key, key_of, ledger_rows, make_source

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
    catalog = write_catalog(tmp_path / "catalog", make_source())
    code, report, _ = run_health(
        {
            "DATABASE_URL": database_url,
            "STORAGE_URL": f"file://{tmp_path}",
            "CATALOG_DIR": str(catalog),
        },
        tmp_path,
    )
    assert (code, report) == (
        0,
        {"status": "ok", "db": "ok", "storage": "ok", "landing": "ok", "deliveries": "ok"},
    )


def test_unreachable_database_is_reported_quickly(tmp_path: Path) -> None:
    url = f"postgresql://nobody:pw@127.0.0.1:{free_port()}/x"
    code, report, seconds = run_health(
        {"DATABASE_URL": url, "STORAGE_URL": f"file://{tmp_path}"}, tmp_path
    )
    assert code == 1
    assert report["status"] == "degraded"
    assert report["db"].startswith("database unreachable")
    assert report["deliveries"] == "not checked: the database is unavailable"
    assert (report["storage"], report["landing"]) == ("ok", "ok")
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
    assert report["landing"] == "not checked: the object store is unavailable"


def test_health_job_in_dagster(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A source of its own: the shared test database holds other tests' failed deliveries.
    monkeypatch.setenv("CATALOG_DIR", str(write_catalog(tmp_path / "catalog", make_source())))
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


def test_a_source_whose_latest_delivery_failed(
    database_url: str, local_store: LocalFolderStore, warehouse: Warehouse, tmp_path: Path
) -> None:
    source, other = make_source(), make_source()
    env = {
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{local_store.root}",
        "CATALOG_DIR": str(write_catalog(tmp_path / "catalog", source, other)),
    }
    local_store.write(key_of(source, "1_good.csv"), GOOD)
    local_store.write(key_of(source, "2_ragged.csv"), RAGGED)
    local_store.write(key_of(other, "1_good.csv"), GOOD)
    for each in (source, other):
        load_pending(each, local_store, warehouse)
    [failed] = by_key(ledger_rows(warehouse, source), key_of(source, "2_ragged.csv"))

    code, report, _ = run_health(env, tmp_path)

    assert code == 1
    assert report == {
        "status": "degraded",
        "db": "ok",
        "storage": "ok",
        "landing": "ok",
        "deliveries": {
            source.name: (
                f"latest delivery failed: {key_of(source, '2_ragged.csv')} "
                f"(#{failed['file_id']} {failed['etag'][:8]}): {failed['error']} "
                f"(`analytics-pipelines files {source.name} --status failed`)"
            )
        },
    }
    assert "line 3: more fields" in failed["error"]

    # A good delivery after it is the latest: the source is healthy again.
    local_store.write(key_of(source, "3_good.csv"), GOOD.replace(b"A,", b"Z,"))
    load_pending(source, local_store, warehouse)
    code, report, _ = run_health(env, tmp_path)
    assert (code, report["status"], report["deliveries"]) == (0, "ok", "ok")


def _as_nobody(work: Callable[[], dict[str, str]]) -> dict[str, str]:
    """Run `work` in a forked child with the `nobody` user's rights (tests run as root, whom
    permissions do not stop); its result comes back as JSON through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with os.fdopen(write_end, "w") as pipe:
                pipe.write(json.dumps(work()))
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and text
    result: dict[str, str] = json.loads(text)
    return result


def test_a_landing_folder_without_permission_is_named() -> None:
    root = world_readable_tempdir("ap-landing-")
    try:
        root.chmod(0o777)
        store = LocalFolderStore(root)
        locked, readable = make_source(), make_source()
        store.write(key_of(locked, "1.csv"), GOOD)
        store.write(key_of(readable, "1.csv"), GOOD)
        (root / "landing").chmod(0o755)
        (root / locked.landing_prefix).chmod(0o700)
        (root / readable.landing_prefix).chmod(0o755)

        problems = _as_nobody(lambda: landing_problems(store, [locked, readable]))

        assert list(problems) == [locked.name]
        reason = problems[locked.name]
        # Listing may raise or pass over the folder; either way the prefix and the cause are named.
        assert reason.startswith(
            (f"cannot list {locked.landing_prefix}: ", f"cannot read {locked.landing_prefix}: ")
        )
        assert "permission denied" in reason.lower()
        # root itself reads everything: the same check passes for it.
        assert landing_problems(store, [locked, readable]) == {}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_landing_prefix_that_is_a_file_is_named(
    warehouse: Warehouse, local_store: LocalFolderStore
) -> None:
    misplaced, fine = make_source(), make_source()
    # `cp orders.csv landing/orders` without the folder: a file where the prefix should be.
    (local_store.root / "landing").mkdir()
    (local_store.root / misplaced.landing_prefix.rstrip("/")).write_bytes(GOOD)

    report = check_health(str(warehouse.url), local_store, [misplaced, fine])

    assert report["status"] == "degraded"
    assert report["landing"] == {
        misplaced.name: (
            f"cannot read {misplaced.landing_prefix}: "
            f"{local_store.root / misplaced.landing_prefix} is not a folder"
        )
    }
    assert (report["db"], report["storage"], report["deliveries"]) == ("ok", "ok", "ok")
