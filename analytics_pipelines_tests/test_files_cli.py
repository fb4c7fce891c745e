"""`analytics-pipelines files` lists what became of each file and retries failed ones, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from analytics_pipelines.cli import main
from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.ingest.discovery import LandingCursor, plan_tick
from analytics_pipelines.lib.storage import LocalFolderStore
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_file_alerts import BAD_HEADER, GOOD, RAGGED
from analytics_pipelines_tests.test_ingest_helpers import by_key, key_of, ledger_rows, make_source

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def write_catalog(folder: Path, *sources: SourceSpec) -> Path:
    """A catalog folder declaring these sources, as a user's CATALOG_DIR would."""
    (folder / "sources").mkdir(parents=True)
    (folder / "kpis").mkdir()
    entries = [s.model_dump(mode="json", exclude_defaults=True) for s in sources]
    (folder / "sources" / "test.yaml").write_text(yaml.safe_dump({"sources": entries}))
    return folder


@pytest.fixture
def delivered(
    local_store: LocalFolderStore,
    warehouse: Warehouse,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> SourceSpec:
    """One delivery of a source: a good file and two refused ones; the CLI's settings point at it."""
    source = make_source()
    local_store.write(key_of(source, "1_good.csv"), GOOD)
    local_store.write(key_of(source, "2_ragged.csv"), RAGGED)
    local_store.write(key_of(source, "3_bad_header.csv"), BAD_HEADER)
    load_pending(source, local_store, warehouse, run_id="run-1")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STORAGE_URL", f"file://{local_store.root}")
    monkeypatch.setenv("CATALOG_DIR", str(write_catalog(tmp_path / "catalog", source)))
    return source


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "analytics_pipelines.cli", *argv],
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_failed_versions_as_json_from_the_command_line(
    delivered: SourceSpec, warehouse: Warehouse
) -> None:
    result = run_cli("files", delivered.name, "--status", "failed", "--format", "json")

    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    failed = [r for r in ledger_rows(warehouse, delivered) if r["status"] == "failed"]
    newest_first = sorted(failed, key=lambda r: r["file_id"], reverse=True)
    assert [(v["key"], v["file_id"], v["etag"], v["status"]) for v in listed] == [
        (r["object_key"], r["file_id"], r["etag"], "failed") for r in newest_first
    ]
    by_name = {v["key"].rsplit("/", 1)[1]: v for v in listed}
    assert "line 3: more fields" in by_name["2_ragged.csv"]["reason"]
    assert "missing required column(s) ordered_at" in by_name["3_bad_header.csv"]["reason"]
    assert by_name["2_ragged.csv"]["run_id"] == "run-1"
    assert by_name["2_ragged.csv"]["when"] == newest_first[-1]["discovered_at"].isoformat()


def test_table_lists_every_version_newest_first(
    delivered: SourceSpec, warehouse: Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["files", delivered.name]) == 0
    lines = capsys.readouterr().out.splitlines()

    assert lines[0].split() == ["KEY", "VERSION", "STATUS", "ROWS", "WHEN", "REASON"]
    rows = sorted(ledger_rows(warehouse, delivered), key=lambda r: r["file_id"], reverse=True)
    assert [line.split()[0] for line in lines[1:]] == [r["object_key"] for r in rows]
    good = next(line for line in lines if "1_good.csv" in line)
    [loaded] = by_key(rows, key_of(delivered, "1_good.csv"))
    assert f"#{loaded['file_id']} {loaded['etag'][:8]}" in good
    assert good.split()[3:5] == ["loaded", "2"]
    ragged = next(line for line in lines if "2_ragged.csv" in line)
    assert " failed " in ragged and "line 3: more fields" in ragged

    assert main(["files", delivered.name, "--limit", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[-1] == "(the newest 1 file versions; --limit N shows more)"


def test_unknown_source_and_status_are_named(
    delivered: SourceSpec, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["files", "nope"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"unknown source 'nope': it is not declared in the catalog (declared: {delivered.name})"
    )
    assert main(["files", delivered.name, "--status", "broken"]) == 2
    assert "unknown status 'broken': expected one of loaded, failed" in capsys.readouterr().err


def test_retry_makes_the_landing_sensor_propose_the_file_again(
    delivered: SourceSpec,
    local_store: LocalFolderStore,
    warehouse: Warehouse,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert plan_tick(delivered, local_store, warehouse, LandingCursor()).new == []

    assert main(["files", "retry", delivered.name, "2_ragged.csv"]) == 0

    out = capsys.readouterr().out
    [ragged] = by_key(ledger_rows(warehouse, delivered), key_of(delivered, "2_ragged.csv"))
    assert out.startswith(f"marked 1 failed version(s) of {delivered.name} for retry:")
    assert key_of(delivered, "2_ragged.csv") in out and f"#{ragged['file_id']}" in out
    assert f"landing_{delivered.name} loads them again on its next tick" in out
    assert ragged["retry_requested_at"] is not None
    plan = plan_tick(delivered, local_store, warehouse, LandingCursor())
    assert [info.key for info in plan.new] == [key_of(delivered, "2_ragged.csv")]

    # The next attempt is a new version; the retried one is settled by it.
    load_pending(delivered, local_store, warehouse, keys=[i.key for i in plan.new])
    versions = by_key(ledger_rows(warehouse, delivered), key_of(delivered, "2_ragged.csv"))
    assert [v["status"] for v in versions] == ["superseded", "failed"]
    assert plan_tick(delivered, local_store, warehouse, LandingCursor()).new == []


def test_retry_refuses_what_is_not_a_failed_current_version(
    delivered: SourceSpec, warehouse: Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = ledger_rows(warehouse, delivered)
    [good] = by_key(rows, key_of(delivered, "1_good.csv"))

    assert main(["files", "retry", delivered.name, "1_good.csv"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"the current version of {key_of(delivered, '1_good.csv')} "
        f"(#{good['file_id']} {good['etag'][:8]}) is loaded, not failed: nothing to retry"
    )
    assert main(["files", "retry", delivered.name, "absent.csv"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"{delivered.name} has no delivery of {key_of(delivered, 'absent.csv')!r} in the ledger"
    )
    assert main(["files", "retry", delivered.name, "--file-id", str(good["file_id"])]) == 1
    assert "is loaded, not failed" in capsys.readouterr().err
    assert main(["files", "retry", delivered.name]) == 2
    assert "exactly one of KEY, --file-id N, --all-failed" in capsys.readouterr().err
    assert all(r["retry_requested_at"] is None for r in ledger_rows(warehouse, delivered))


def test_retry_all_failed_marks_each_once(
    delivered: SourceSpec, warehouse: Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    [ragged] = by_key(ledger_rows(warehouse, delivered), key_of(delivered, "2_ragged.csv"))
    assert main(["files", "retry", delivered.name, "--file-id", str(ragged["file_id"])]) == 0
    capsys.readouterr()

    assert main(["files", "retry", delivered.name, "--all-failed", "--format", "json"]) == 0

    result = json.loads(capsys.readouterr().out)
    assert [v["key"] for v in result["marked"]] == [key_of(delivered, "3_bad_header.csv")]
    assert [v["key"] for v in result["already_requested"]] == [key_of(delivered, "2_ragged.csv")]
    marked = [r["object_key"] for r in ledger_rows(warehouse, delivered) if r["retry_requested_at"]]
    assert sorted(marked) == [
        key_of(delivered, "2_ragged.csv"),
        key_of(delivered, "3_bad_header.csv"),
    ]
