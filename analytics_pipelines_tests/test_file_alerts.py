"""A failed file is impossible to miss: one webhook alert per version, an ERROR check naming why."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from structlog.testing import capture_logs

from analytics_pipelines.defs.ingest.assets import FILES_READABLE, build_raw_asset
from analytics_pipelines.defs.ops.file_alerts import (
    FAILED_FILE_ALERT_SENSOR,
    build_failed_file_alert_sensor,
)
from analytics_pipelines.lib import alerts
from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.pgserver import free_port
from analytics_pipelines.lib.settings import get_settings
from analytics_pipelines.lib.storage import LocalFolderStore, ObjectStore
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import WarehouseResource
from analytics_pipelines_tests.test_alerts import FAST, Receiver, receiver  # noqa: F401
from analytics_pipelines_tests.test_ingest_assets import _resources
from analytics_pipelines_tests.test_ingest_helpers import by_key, key_of, ledger_rows, make_source

GOOD = b"order_id,ordered_at,region,amount\nA,2024-03-01,north,1\nB,2024-03-02,south,2\n"
RAGGED = b"order_id,ordered_at,region,amount\nC,2024-03-01,north,1\nD,2024-03-01,north,1,too,many\n"
BAD_HEADER = b"order_id,region,amount\nE,north,1\n"


@pytest.fixture
def alert_env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, local_store: LocalFolderStore
) -> pytest.MonkeyPatch:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STORAGE_URL", f"file://{local_store.root}")
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "http://dagster.example:3000")
    monkeypatch.delenv("ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.setattr(alerts, "DEFAULT_POLICY", FAST)
    return monkeypatch


@pytest.fixture
def webhook(alert_env: pytest.MonkeyPatch, receiver: Receiver) -> Receiver:  # noqa: F811
    alert_env.setenv("ALERT_WEBHOOK_URL", receiver.url)
    return receiver


@pytest.fixture
def delivered(local_store: LocalFolderStore, warehouse: Warehouse) -> SourceSpec:
    """A source whose one delivery loaded a good file and refused two bad ones."""
    source = make_source()
    local_store.write(key_of(source, "1_good.csv"), GOOD)
    local_store.write(key_of(source, "2_ragged.csv"), RAGGED)
    local_store.write(key_of(source, "3_bad_header.csv"), BAD_HEADER)
    report = load_pending(source, local_store, warehouse, run_id="run-of-the-load")
    assert sorted(o.key.rsplit("/", 1)[1] for o in report.failures) == [
        "2_ragged.csv",
        "3_bad_header.csv",
    ]
    return source


def _tick(sensor: dg.SensorDefinition, database_url: str) -> str:
    context = dg.build_sensor_context(
        resources={"warehouse": WarehouseResource(database_url=database_url)}
    )
    result = sensor(context)
    assert isinstance(result, dg.SkipReason)
    return result.skip_message or ""


def _failed(warehouse: Warehouse, source: SourceSpec, name: str) -> dict[str, Any]:
    [row] = by_key(ledger_rows(warehouse, source), key_of(source, name))
    assert row["status"] == "failed"
    return row


def test_every_failed_version_is_posted_once_across_ticks(
    webhook: Receiver, delivered: SourceSpec, warehouse: Warehouse, database_url: str
) -> None:
    source = delivered
    sensor = build_failed_file_alert_sensor([source.name])
    assert sensor.name == FAILED_FILE_ALERT_SENSOR

    messages = [_tick(sensor, database_url) for _ in range(3)]

    ragged, bad_header = (
        _failed(warehouse, source, "2_ragged.csv"),
        _failed(warehouse, source, "3_bad_header.csv"),
    )
    assert sorted(p["key"] for p in webhook.received) == [
        key_of(source, "2_ragged.csv"),
        key_of(source, "3_bad_header.csv"),
    ]
    payload = next(p for p in webhook.received if p["file_id"] == ragged["file_id"])
    assert payload == {
        "event": "file_failed",
        "source": source.name,
        "key": key_of(source, "2_ragged.csv"),
        "file_id": ragged["file_id"],
        "etag": ragged["etag"],
        "reason": ragged["error"],
        "failed_at": ragged["discovered_at"].isoformat(),
        "run_id": "run-of-the-load",
        "run_url": "http://dagster.example:3000/runs/run-of-the-load",
        "command": f"analytics-pipelines files {source.name} --status failed",
        "retry_command": (
            f"analytics-pipelines files retry {source.name} --file-id {ragged['file_id']}"
        ),
    }
    assert "line 3: more fields" in payload["reason"]
    assert ragged["alerted_at"] is not None and bad_header["alerted_at"] is not None
    assert messages[0].startswith("2 failed file version(s) posted to the webhook")
    assert messages[1:] == ["no failed file version waits for an alert"] * 2
    # The good file of the same delivery is never alerted.
    [good] = by_key(ledger_rows(warehouse, source), key_of(source, "1_good.csv"))
    assert (good["status"], good["alerted_at"]) == ("loaded", None)


@pytest.mark.parametrize("receiver", [[503, 503, 503]], indirect=True)
def test_a_receiver_that_refuses_gets_the_alert_on_a_later_tick(
    webhook: Receiver, delivered: SourceSpec, warehouse: Warehouse, database_url: str
) -> None:
    source = delivered
    sensor = build_failed_file_alert_sensor([source.name])
    ragged = _failed(warehouse, source, "2_ragged.csv")

    first = _tick(sensor, database_url)

    # Three attempts at the oldest version, all refused: nothing is marked, the tick says so.
    assert [p["file_id"] for p in webhook.received] == [ragged["file_id"]] * 3
    assert "did not take the alert" in first and "retried on the next tick" in first
    assert _failed(warehouse, source, "2_ragged.csv")["alerted_at"] is None
    assert _failed(warehouse, source, "3_bad_header.csv")["alerted_at"] is None

    second = _tick(sensor, database_url)
    third = _tick(sensor, database_url)

    delivered = webhook.received[3:]
    assert sorted(p["key"] for p in delivered) == [
        key_of(source, "2_ragged.csv"),
        key_of(source, "3_bad_header.csv"),
    ]
    assert second.startswith("2 failed file version(s) posted")
    assert third == "no failed file version waits for an alert"
    assert _failed(warehouse, source, "2_ragged.csv")["alerted_at"] is not None


def test_a_receiver_that_is_down_gets_the_alert_once_it_is_up(
    alert_env: pytest.MonkeyPatch,
    receiver: Receiver,  # noqa: F811
    delivered: SourceSpec,
    warehouse: Warehouse,
    database_url: str,
) -> None:
    source = delivered
    sensor = build_failed_file_alert_sensor([source.name])
    alert_env.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/hooks/down")
    get_settings.cache_clear()

    with capture_logs() as logs:
        down = _tick(sensor, database_url)

    assert "retried on the next tick" in down
    failed = [entry for entry in logs if entry["event"] == "webhook_failed"]
    assert len(failed) == 1 and "Connection refused" in failed[0]["reason"]
    assert _failed(warehouse, source, "2_ragged.csv")["alerted_at"] is None

    alert_env.setenv("ALERT_WEBHOOK_URL", receiver.url)
    get_settings.cache_clear()  # a restarted code location reads the new setting
    up = _tick(sensor, database_url)

    assert up.startswith("2 failed file version(s) posted")
    assert sorted(p["key"] for p in receiver.received) == [
        key_of(source, "2_ragged.csv"),
        key_of(source, "3_bad_header.csv"),
    ]


def test_without_a_webhook_the_failure_is_logged_once_and_marked(
    alert_env: pytest.MonkeyPatch,
    delivered: SourceSpec,
    warehouse: Warehouse,
    database_url: str,
) -> None:
    source = delivered
    sensor = build_failed_file_alert_sensor([source.name])

    with capture_logs() as logs:
        first = _tick(sensor, database_url)
        second = _tick(sensor, database_url)

    logged = [entry for entry in logs if entry["event"] == "file_failed"]
    assert sorted(entry["key"] for entry in logged) == [
        key_of(source, "2_ragged.csv"),
        key_of(source, "3_bad_header.csv"),
    ]
    assert not [entry for entry in logs if entry["event"].startswith("webhook_")]
    assert first.startswith("2 failed file version(s) logged (ALERT_WEBHOOK_URL is not set)")
    assert second == "no failed file version waits for an alert"
    assert _failed(warehouse, source, "2_ragged.csv")["alerted_at"] is not None


def test_files_readable_check_fails_with_the_reason_in_its_description(
    store: ObjectStore, warehouse: Warehouse, database_url: str
) -> None:
    source = make_source()
    store.write(key_of(source, "1_good.csv"), GOOD)
    store.write(key_of(source, "2_ragged.csv"), RAGGED)

    result = dg.materialize(
        [build_raw_asset(source)], resources=_resources(store, database_url), raise_on_error=False
    )

    assert result.success  # the good file is loaded: the run is green, the check is not
    [check] = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed, check.severity) == (
        FILES_READABLE,
        False,
        dg.AssetCheckSeverity.ERROR,
    )
    reason = _failed(warehouse, source, "2_ragged.csv")["error"]
    assert "line 3: more fields" in reason
    assert check.description == f"1 file failed: {key_of(source, '2_ragged.csv')} — {reason}"


def test_many_failed_files_are_summarised_with_where_to_see_all(
    local_store: LocalFolderStore, warehouse: Warehouse, database_url: str
) -> None:
    source = make_source()
    for i in range(5):
        local_store.write(key_of(source, f"bad_{i}.csv"), BAD_HEADER.replace(b"E", b"E%d" % i))

    result = dg.materialize(
        [build_raw_asset(source)],
        resources=_resources(local_store, database_url),
        raise_on_error=False,
    )

    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    description = check.description or ""
    assert description.startswith(f"5 files failed: {key_of(source, 'bad_0.csv')} — ")
    assert "missing required column(s) ordered_at" in description
    assert key_of(source, "bad_2.csv") in description
    assert key_of(source, "bad_3.csv") not in description
    assert description.endswith(
        f"; and 2 more (`analytics-pipelines files {source.name} --status failed`)"
    )
