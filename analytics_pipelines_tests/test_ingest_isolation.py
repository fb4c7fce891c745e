"""One bad object never stalls, hides or corrupts a source (issue 12, points 1-3 and two of 7).

Every case puts good files beside the bad one and checks the ledger, the reason a user reads,
the raw rows, and that the good files of the same run loaded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from analytics_pipelines.defs.clean.assets import build_clean_asset
from analytics_pipelines.defs.clean.checks import RECONCILIATION, build_clean_checks
from analytics_pipelines.defs.ingest.assets import build_raw_asset
from analytics_pipelines.defs.ingest.sensors import raw_asset_key, raw_op_name
from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean import FusedClean
from analytics_pipelines.lib.ingest import KeysRefused, load_object, load_pending
from analytics_pipelines.lib.storage import LocalFolderStore, ObjectStore, S3Store
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.conftest import world_readable_tempdir
from analytics_pipelines_tests.test_ingest_assets import _resources
from analytics_pipelines_tests.test_ingest_helpers import (
    by_key,
    key_of,
    ledger_rows,
    make_source,
    raw_rows,
    values,
)

HEADER = b"order_id,ordered_at,region,amount\n"
FIRST = HEADER + b"A1,2024-03-01,north,1\nA2,2024-03-01,south,2\n"
LAST = HEADER + b"Z1,2024-03-02,east,3\n"
NOBODY = 65534  # the uid `_AS_NOBODY` drops to


def _statuses(warehouse: Warehouse, source: SourceSpec) -> dict[str, tuple[str, str | None]]:
    """Current ledger status and reason per file name (newest version of each key)."""
    current: dict[str, tuple[str, str | None]] = {}
    for entry in ledger_rows(warehouse, source):
        name = entry["object_key"][len(source.landing_prefix) :]
        current[name] = (entry["status"], entry["error"])
    return current


def _order_ids(warehouse: Warehouse, source: SourceSpec) -> list[str]:
    return sorted(r["order_id"] for r in raw_rows(warehouse, source))


def _raw_columns(warehouse: Warehouse, source: SourceSpec) -> list[str]:
    with warehouse.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'raw' AND table_name = :t ORDER BY ordinal_position"
                ),
                {"t": source.name},
            ).scalars()
        )


def _good_beside(store: ObjectStore, source: SourceSpec) -> None:
    store.write(key_of(source, "a_first.csv"), FIRST)
    store.write(key_of(source, "z_last.csv"), LAST)


def _assert_good_ones_loaded(warehouse: Warehouse, source: SourceSpec) -> None:
    statuses = _statuses(warehouse, source)
    assert statuses["a_first.csv"] == ("loaded", None)
    assert statuses["z_last.csv"] == ("loaded", None)
    assert _order_ids(warehouse, source) == ["A1", "A2", "Z1"]


# -- local store: special files and links -------------------------------------------------------


def _make_fifo(path: Path) -> str:
    os.mkfifo(path)
    return "not a regular file (FIFO)"


def _make_socket(path: Path) -> str:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()
    return "not a regular file (socket)"


def _make_broken_link(path: Path) -> str:
    path.symlink_to(path.parent / "gone.csv")
    return "broken symbolic link"


def _make_loop(path: Path) -> str:
    other = path.parent.parent / f"{path.parent.name}-loop"  # outside the landing prefix
    path.symlink_to(other)
    other.symlink_to(path)
    return "symbolic links form a loop"


def _make_escaping_link(path: Path) -> str:
    outside = world_readable_tempdir("ap-outside-") / "secret.csv"
    outside.write_bytes(HEADER + b"S1,2024-03-01,north,1\n")
    path.symlink_to(outside)
    return "symbolic link points outside the storage folder"


def _make_folder_link(path: Path) -> str:
    # A folder link out of the root would let the listing hash files elsewhere: never descended.
    outside = world_readable_tempdir("ap-outside-")
    (outside / "x.csv").write_bytes(HEADER + b"S1,2024-03-01,north,1\n")
    path.symlink_to(outside)
    return "symbolic link points outside the storage folder"


SPECIAL = {
    "fifo": _make_fifo,
    "socket": _make_socket,
    "broken_link": _make_broken_link,
    "looping_link": _make_loop,
    "escaping_link": _make_escaping_link,
    "escaping_folder_link": _make_folder_link,
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(SPECIAL))
@pytest.mark.parametrize("by_keys", [False, True], ids=["listing", "run_keys"])
def test_special_entry_fails_with_reason_and_never_blocks(
    case: str, by_keys: bool, local_store: LocalFolderStore, warehouse: Warehouse
) -> None:
    source = make_source()
    _good_beside(local_store, source)
    folder = local_store.root / key_of(source, "x").rsplit("/", 1)[0]
    name = key_of(source, "b_bad.csv").rsplit("/", 1)[1]
    reason = SPECIAL[case](folder / name)

    keys = [i.key for i in local_store.list(source.landing_prefix)] if by_keys else None
    report = load_pending(source, local_store, warehouse, keys=keys)

    [failure] = report.failures
    assert failure.key == key_of(source, "b_bad.csv")
    assert reason in (failure.error or ""), failure.error
    status, error = _statuses(warehouse, source)["b_bad.csv"]
    assert (status, error) == ("failed", failure.error)
    _assert_good_ones_loaded(warehouse, source)
    assert raw_rows(warehouse, source, failure.file_id) == []

    # Not stuck: the failed entry is settled, the next delivery loads on the next run.
    local_store.write(key_of(source, "c_next.csv"), HEADER + b"C1,2024-03-03,west,4\n")
    again = load_pending(source, local_store, warehouse)
    assert [(o.key, o.status) for o in again.outcomes] == [(key_of(source, "c_next.csv"), "loaded")]


def test_link_inside_the_storage_folder_is_followed(
    local_store: LocalFolderStore, warehouse: Warehouse
) -> None:
    source = make_source()
    target = local_store.root / "elsewhere" / "orders.csv"
    target.parent.mkdir()
    target.write_bytes(FIRST)
    link = local_store.root / key_of(source, "latest.csv")
    link.parent.mkdir(parents=True)
    link.symlink_to(target)

    report = load_pending(source, local_store, warehouse)

    assert [(o.key, o.status, o.rows) for o in report.outcomes] == [
        (key_of(source, "latest.csv"), "loaded", 2)
    ]
    assert _order_ids(warehouse, source) == ["A1", "A2"]


# Imports first (the interpreter's files are root's), then the privileges go: from then on
# the kernel checks every read as user nobody.
_AS_NOBODY = """
import json, os, sys
from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean import FusedClean
from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.storage import LocalFolderStore
from analytics_pipelines.lib.warehouse import Warehouse
source_json, root, url = sys.argv[1:4]
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
report = load_pending(SourceSpec.model_validate_json(source_json), LocalFolderStore(root), Warehouse(url))
print(json.dumps([[o.key, o.status, o.error] for o in report.outcomes]))
"""


def _load_as_nobody(source: SourceSpec, root: Path, database_url: str) -> list[list[Any]]:
    """Run the load in a fresh process that dropped root's privileges (a real EACCES)."""
    done = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY, source.model_dump_json(), str(root), database_url],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.timeout(120)
def test_permission_denied_file_fails_and_the_others_load(
    warehouse: Warehouse, database_url: str
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    source = make_source()
    root = world_readable_tempdir("ap-perm-")
    store = LocalFolderStore(root)
    _good_beside(store, source)
    store.write(key_of(source, "m_secret.csv"), HEADER + b"P1,2024-03-01,north,1\n")
    os.chown(root, NOBODY, NOBODY)
    # By path, not by listing: this process must not hash (and cache) what nobody cannot read.
    for name in ("a_first.csv", "m_secret.csv", "z_last.csv"):
        (root / key_of(source, name)).chmod(0o600 if name == "m_secret.csv" else 0o644)

    outcomes = _load_as_nobody(source, root, database_url)

    denied = key_of(source, "m_secret.csv")
    assert [o[:2] for o in outcomes] == [
        [key_of(source, "a_first.csv"), "loaded"],
        [denied, "failed"],
        [key_of(source, "z_last.csv"), "loaded"],
    ]
    assert _statuses(warehouse, source)["m_secret.csv"] == (
        "failed",
        f"permission denied reading {denied}",
    )
    _assert_good_ones_loaded(warehouse, source)

    # Fixed by the user (readable now): a new version, loaded by the next run.
    (root / denied).chmod(0o644)
    again = _load_as_nobody(source, root, database_url)
    assert [o[:2] for o in again] == [[denied, "loaded"]]
    assert _order_ids(warehouse, source) == ["A1", "A2", "P1", "Z1"]


# -- both stores --------------------------------------------------------------------------------


def test_vanished_file_fails_and_the_others_load(store: ObjectStore, warehouse: Warehouse) -> None:
    source = make_source()
    _good_beside(store, source)
    store.write(key_of(source, "m_gone.csv"), HEADER + b"V1,2024-03-01,north,1\n")
    listed = store.list(source.landing_prefix)
    gone = key_of(source, "m_gone.csv")
    store.delete(gone)

    # As a sensor run would: the keys it listed, one of them deleted since.
    report = load_pending(source, store, warehouse, keys=[i.key for i in listed])

    assert [(o.key, o.status) for o in report.outcomes] == [
        (key_of(source, "a_first.csv"), "loaded"),
        (gone, "failed"),
        (key_of(source, "z_last.csv"), "loaded"),
    ]
    assert _statuses(warehouse, source)["m_gone.csv"] == (
        "failed",
        "the file vanished between listing and reading",
    )
    _assert_good_ones_loaded(warehouse, source)

    # Deleted after its metadata was read: the open fails, the same reason is recorded.
    store.write(key_of(source, "n_brief.csv"), HEADER + b"B1,2024-03-01,north,1\n")
    info = store.head(key_of(source, "n_brief.csv"))
    store.delete(info.key)
    outcome = load_object(source, store, warehouse, info)
    assert (outcome.status, outcome.error) == (
        "failed",
        "the file vanished between listing and reading",
    )
    assert _order_ids(warehouse, source) == ["A1", "A2", "Z1"]


def _wide_header(count: int, stem: str) -> bytes:
    return HEADER.rstrip(b"\n") + b"".join(b",%s %d" % (stem.encode(), i) for i in range(count))


def test_column_budget_is_checked_before_raw_changes(
    store: ObjectStore, warehouse: Warehouse
) -> None:
    source = make_source()
    store.write(key_of(source, "a_first.csv"), FIRST)
    load_pending(source, store, warehouse)
    # Columns an operator added and dropped again still take their slots.
    with warehouse.begin() as conn:
        table = f'raw."{source.name}"'
        conn.execute(
            sa.text(
                f"ALTER TABLE {table} " + ", ".join(f"ADD COLUMN old_{i} text" for i in range(40))
            )
        )
        conn.execute(
            sa.text(f"ALTER TABLE {table} " + ", ".join(f"DROP COLUMN old_{i}" for i in range(40)))
        )
    before = _raw_columns(warehouse, source)
    slots = len(before) + 40
    wide_row = b"W1,2024-03-01,north,1" + b",x" * 1570 + b"\n"
    store.write(key_of(source, "b_wide.csv"), _wide_header(1570, "junk") + b"\n" + wide_row)
    good_row = b"G1,2024-03-01,north,1" + b",g" * 40 + b"\n"
    store.write(key_of(source, "c_good.csv"), _wide_header(40, "Extra") + b"\n" + good_row)

    report = load_pending(source, store, warehouse)

    room = 1600 - slots
    statuses = _statuses(warehouse, source)
    assert statuses["b_wide.csv"] == (
        "failed",
        f"the header adds 1,570 columns; raw.{source.name} can take {room:,} more: "
        "PostgreSQL allows 1,600, dropped ones included",
    )
    assert statuses["c_good.csv"] == ("loaded", None)
    assert [o.status for o in report.outcomes] == ["failed", "loaded"]
    after = _raw_columns(warehouse, source)
    assert after == before + [f"extra_{i}" for i in range(40)]
    assert _order_ids(warehouse, source) == ["A1", "A2", "G1"]


def test_failed_file_leaves_no_columns_behind(store: ObjectStore, warehouse: Warehouse) -> None:
    source = make_source()
    _good_beside(store, source)
    store.write(
        key_of(source, "m_ragged.csv"),
        HEADER.rstrip(b"\n") + b",junk_a,junk_b\nR1,2024-03-01,north,1,a,b\nR2,2024-03-01\n",
    )

    load_pending(source, store, warehouse)

    status, error = _statuses(warehouse, source)["m_ragged.csv"]
    assert status == "failed" and "line 3: fewer fields" in (error or "")
    assert "junk_a" not in _raw_columns(warehouse, source)
    _assert_good_ones_loaded(warehouse, source)


def test_extra_header_text_is_kept_in_the_ledger(store: ObjectStore, warehouse: Warehouse) -> None:
    source = make_source()
    store.write(
        key_of(source, "a.csv"),
        HEADER.rstrip(b"\n") + b",Coupon Code,Gift-Wrap?,2nd Address\nA,2024-03-01,north,1,X,y,z\n",
    )

    load_pending(source, store, warehouse)

    [entry] = ledger_rows(warehouse, source)
    assert entry["status"] == "loaded"
    assert entry["extra_columns"] == ["coupon_code", "gift_wrap", "c_2nd_address"]
    assert entry["extra_column_headers"] == {
        "coupon_code": "Coupon Code",
        "gift_wrap": "Gift-Wrap?",
        "c_2nd_address": "2nd Address",
    }
    assert values(raw_rows(warehouse, source), "coupon_code", "gift_wrap", "c_2nd_address") == [
        ("X", "y", "z")
    ]


def test_new_columns_are_seen_by_the_clean_while_loading_path(
    store: ObjectStore, warehouse: Warehouse
) -> None:
    source = make_source()
    key = key_of(source, "a.csv")
    good = b"".join(b"A%d,2024-03-01,north,1,XMAS\n" % n for n in range(40))
    bad = b"B1,2024-03-01,south,abc,NY\n"
    store.write(key, HEADER.rstrip(b"\n") + b",Coupon Code\n" + good + bad)

    report = load_pending(source, store, warehouse, keys=[key], clean_while_loading=FusedClean)

    [outcome] = report.outcomes
    assert (outcome.status, outcome.cleaned, outcome.extra_columns) == (
        "loaded",
        True,
        ["coupon_code"],
    )
    [entry] = ledger_rows(warehouse, source)
    assert (entry["clean_rows"], entry["quarantined_rows"]) == (40, 1)
    with warehouse.connect() as conn:
        [quarantined] = conn.execute(
            sa.text("SELECT raw_values FROM quarantine.rows WHERE file_id = :f"),
            {"f": entry["file_id"]},
        ).scalars()
    assert quarantined["coupon_code"] == "NY" and quarantined["amount"] == "abc"


def test_foreign_prefix_run_key_is_refused_before_loading(
    store: ObjectStore, warehouse: Warehouse, database_url: str
) -> None:
    source = make_source()
    other = make_source()
    store.write(key_of(source, "a.csv"), FIRST)
    store.write(key_of(other, "b.csv"), LAST)
    keys = [key_of(source, "a.csv"), key_of(other, "b.csv")]

    with pytest.raises(KeysRefused) as refused:
        load_pending(source, store, warehouse, keys=keys)
    assert repr(key_of(other, "b.csv")) in str(refused.value)
    assert repr(source.landing_prefix) in str(refused.value)

    result = dg.materialize(
        [build_raw_asset(source)],
        resources=_resources(store, database_url),
        run_config={"ops": {raw_op_name(source.name): {"config": {"keys": keys}}}},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.error.message
    assert "not under the landing prefix" in message and key_of(other, "b.csv") in message
    assert ledger_rows(warehouse, source) == [] and ledger_rows(warehouse, other) == []

    dotted = [f"{source.landing_prefix}/../{other.landing_prefix}b.csv"]
    with pytest.raises(KeysRefused):
        load_pending(source, store, warehouse, keys=dotted)


def test_s3_folder_marker_is_not_a_delivery(s3_store: S3Store, warehouse: Warehouse) -> None:
    source = make_source()
    _good_beside(s3_store, source)
    marker = f"{source.landing_prefix}sub/"
    s3_store.client.put_object(Bucket=s3_store.bucket, Key=f"{s3_store.prefix}{marker}", Body=b"")

    assert marker not in [i.key for i in s3_store.list(source.landing_prefix)]
    report = load_pending(source, s3_store, warehouse)
    by_run_key = load_pending(source, s3_store, warehouse, keys=[marker])

    assert [o.status for o in report.outcomes] == ["loaded", "loaded"]
    assert by_run_key.outcomes == []
    assert by_key(ledger_rows(warehouse, source), marker) == []
    _assert_good_ones_loaded(warehouse, source)


def test_s3_archived_object_fails_and_the_others_load(
    s3_store: S3Store, warehouse: Warehouse
) -> None:
    source = make_source()
    _good_beside(s3_store, source)
    archived = key_of(source, "m_cold.csv")
    s3_store.client.put_object(
        Bucket=s3_store.bucket,
        Key=f"{s3_store.prefix}{archived}",
        Body=HEADER + b"C1,2024-03-01,north,1\n",
        StorageClass="GLACIER",
    )

    load_pending(source, s3_store, warehouse)

    assert _statuses(warehouse, source)["m_cold.csv"] == (
        "failed",
        f"{archived} is archived in a cold storage class (e.g. GLACIER): restore it to load it",
    )
    _assert_good_ones_loaded(warehouse, source)


def test_s3_marker_pages_still_list_everything(s3_store: S3Store) -> None:
    for name in ["a/", "a/1.csv", "b/", "b/2.csv", "c/", "c/3.csv"]:
        s3_store.client.put_object(
            Bucket=s3_store.bucket, Key=f"{s3_store.prefix}land/{name}", Body=b"x"
        )
    assert [i.key for i in s3_store.iter_all("land/", page_size=2)] == [
        "land/a/1.csv",
        "land/b/2.csv",
        "land/c/3.csv",
    ]


# -- header-only files and re-runs after a crash ------------------------------------------------


def _materialise_raw_and_clean(
    store: ObjectStore, database_url: str, source: SourceSpec, keys: list[str]
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [build_raw_asset(source), build_clean_asset(source), *build_clean_checks(source)],
        resources=_resources(store, database_url),
        run_config={"ops": {raw_op_name(source.name): {"config": {"keys": keys}}}},
        raise_on_error=False,
    )


def _metadata(result: dg.ExecuteInProcessResult, *path: str) -> dict[str, Any]:
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(list(path))
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.mark.parametrize("fmt", ["lf", "crlf"])
def test_header_only_file_is_loaded_with_zero_rows_and_cleans(
    fmt: str, store: ObjectStore, warehouse: Warehouse, database_url: str
) -> None:
    source = make_source()
    store.write(key_of(source, "a_first.csv"), FIRST)
    empty = key_of(source, "b_empty.csv")
    # With `\r\n` line ends too, as spreadsheet exports write them.
    store.write(empty, HEADER if fmt == "lf" else HEADER.replace(b"\n", b"\r\n"))

    result = _materialise_raw_and_clean(
        store, database_url, source, [key_of(source, "a_first.csv"), empty]
    )

    assert result.success
    [entry] = by_key(ledger_rows(warehouse, source), empty)
    assert (entry["status"], entry["row_count"], entry["error"]) == ("loaded", 0, None)
    assert entry["cleaned_at"] is not None
    assert (entry["clean_rows"], entry["quarantined_rows"], entry["replaced_rows"]) == (0, 0, 0)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks[RECONCILIATION] is True
    assert _metadata(result, *raw_asset_key(source.name).path)["files_loaded"] == 2


def test_rerun_after_crash_reports_rows_committed_earlier(
    store: ObjectStore, warehouse: Warehouse, database_url: str
) -> None:
    source = make_source()
    store.write(key_of(source, "a.csv"), FIRST)
    store.write(key_of(source, "b.csv"), LAST)
    keys = [key_of(source, "a.csv"), key_of(source, "b.csv")]
    # The crashed run: raw of a.csv committed, then the server went away before clean.
    crashed = load_pending(source, store, warehouse, keys=keys[:1], run_id="crashed-run")
    assert [o.status for o in crashed.outcomes] == ["loaded"]

    result = _materialise_raw_and_clean(store, database_url, source, keys)

    assert result.success
    raw = _metadata(result, *raw_asset_key(source.name).path)
    assert (raw["files_loaded"], raw["rows_loaded"]) == (1, 1)
    assert (raw["files_loaded_earlier"], raw["rows_loaded_earlier"]) == (1, 2)
    assert raw["loaded_earlier_file_ids"] == [crashed.outcomes[0].file_id]
    committed = (len(FIRST.splitlines()) - 1) + (len(LAST.splitlines()) - 1)
    assert raw["rows_loaded"] + raw["rows_loaded_earlier"] == committed
    statuses = [
        (e["object_key"], e["status"], e["cleaned_at"] is not None)
        for e in ledger_rows(warehouse, source)
    ]
    assert statuses == [(keys[0], "loaded", True), (keys[1], "loaded", True)]

    # Once cleaned, the same keys report nothing earlier: each row is reported once.
    again = _materialise_raw_and_clean(store, database_url, source, keys)
    assert _metadata(again, *raw_asset_key(source.name).path)["files_loaded_earlier"] == 0
