"""Failure alerts reach a real HTTP receiver, survive a flaky one and give up on a silent one in bounded time."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dagster as dg
import pytest
from structlog.testing import capture_logs

from analytics_pipelines.defs.ops.alerts import run_failure_alert_sensor
from analytics_pipelines.lib import alerts
from analytics_pipelines.lib.alerts import FailureAlert, RetryPolicy, post_json

FAST = RetryPolicy(attempts=3, timeout_seconds=0.5, first_backoff_seconds=0.05)


@dataclass
class Receiver:
    url: str
    statuses: list[int]
    received: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    """A webhook receiver on loopback answering with the scripted statuses, then 200."""
    statuses: list[int] = list(getattr(request, "param", []))
    state = Receiver(url="", statuses=statuses)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.received.append(json.loads(body))
                state.paths.append(self.path)
                status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (kernel backlog) but never answers a request."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        listener.close()


def _alert() -> FailureAlert:
    return FailureAlert(
        run_id="abc123",
        job="ingest_orders",
        assets=["raw/orders"],
        partition="2024-05-01",
        error="boom",
        run_url=alerts.run_url(None, "abc123"),
    )


def test_posts_the_alert_as_json(receiver: Receiver) -> None:
    assert post_json(receiver.url, _alert().as_json(), FAST) is True
    assert receiver.received == [
        {
            "event": "run_failed",
            "run_id": "abc123",
            "job": "ingest_orders",
            "assets": ["raw/orders"],
            "partition": "2024-05-01",
            "error": "boom",
            "run_url": "http://localhost:3000/runs/abc123",
            "failed_steps": [],
        }
    ]


@pytest.mark.parametrize("receiver", [[500, 500]], indirect=True)
def test_retries_after_server_errors(receiver: Receiver) -> None:
    with capture_logs() as logs:
        assert post_json(receiver.url, {"run_id": "r1"}, FAST) is True
    assert receiver.received == [{"run_id": "r1"}] * 3
    retries = [entry for entry in logs if entry["event"] == "webhook_retry"]
    assert [entry["reason"] for entry in retries] == ["HTTP 500", "HTTP 500"]
    # The token in the webhook path stays out of the logs.
    assert all("secret-token" not in str(entry) for entry in logs)


@pytest.mark.parametrize("receiver", [[500, 500, 500, 500]], indirect=True)
def test_gives_up_after_the_last_attempt(receiver: Receiver) -> None:
    with capture_logs() as logs:
        assert post_json(receiver.url, {"run_id": "r2"}, FAST) is False
    assert len(receiver.received) == 3
    failed = [entry for entry in logs if entry["event"] == "webhook_failed"]
    assert failed and failed[0]["reason"] == "HTTP 500" and failed[0]["attempt"] == 3


@pytest.mark.parametrize("receiver", [[404]], indirect=True)
def test_does_not_retry_a_client_error(receiver: Receiver) -> None:
    assert post_json(receiver.url, {"run_id": "r3"}, FAST) is False
    assert len(receiver.received) == 1


def test_a_receiver_that_never_answers_costs_bounded_time(silent_url: str) -> None:
    started = time.monotonic()
    with capture_logs() as logs:
        assert post_json(silent_url, {"run_id": "r4"}, FAST) is False
    elapsed = time.monotonic() - started
    # 3 attempts x 0.5 s timeout + 0.05 s + 0.1 s backoff, with slack for a loaded machine.
    assert elapsed < 5
    failed = [entry for entry in logs if entry["event"] == "webhook_failed"]
    assert len(failed) == 1 and "timed out" in failed[0]["reason"]


def test_an_unreachable_receiver_is_logged_not_raised() -> None:
    with capture_logs() as logs:
        assert post_json("http://127.0.0.1:9/nothing-listens", {"x": 1}, FAST) is False
    assert [entry["event"] for entry in logs].count("webhook_failed") == 1


# ---- the sensor, evaluated on a really failed run ------------------------------------------------

daily = dg.DailyPartitionsDefinition(start_date="2024-01-01")


@dg.asset(key=["raw", "alert_probe"], partitions_def=daily)
def exploding_asset() -> None:
    raise ValueError("file landing/orders/bad.csv line 7: unterminated quote")


@pytest.fixture
def failed_run() -> tuple[dg.DagsterInstance, dg.ExecuteInProcessResult]:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [exploding_asset], instance=instance, partition_key="2024-05-01", raise_on_error=False
    )
    assert not result.success
    return instance, result


def _evaluate_sensor(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> None:
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    )
    run_failure_alert_sensor(context)


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> pytest.MonkeyPatch:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:1/x")
    monkeypatch.setenv("STORAGE_URL", f"file://{tmp_path}")
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "http://dagster.example:3000/")
    monkeypatch.delenv("ALERT_WEBHOOK_URL", raising=False)
    return monkeypatch


def test_sensor_is_running_by_default() -> None:
    assert run_failure_alert_sensor.default_status == dg.DefaultSensorStatus.RUNNING


@pytest.mark.parametrize("receiver", [[500, 500]], indirect=True)
def test_sensor_posts_a_failed_run_after_retries(
    failed_run: tuple[dg.DagsterInstance, dg.ExecuteInProcessResult],
    receiver: Receiver,
    settings_env: pytest.MonkeyPatch,
) -> None:
    settings_env.setenv("ALERT_WEBHOOK_URL", receiver.url)
    settings_env.setattr(alerts, "DEFAULT_POLICY", FAST)
    instance, result = failed_run
    run_id = result.dagster_run.run_id

    with capture_logs() as logs:
        _evaluate_sensor(instance, result)

    assert len(receiver.received) == 3
    payload = receiver.received[-1]
    assert payload["run_id"] == run_id
    assert payload["job"] == result.dagster_run.job_name
    assert payload["assets"] == ["raw/alert_probe"]
    assert payload["partition"] == "2024-05-01"
    assert "unterminated quote" in payload["error"]
    assert payload["run_url"] == f"http://dagster.example:3000/runs/{run_id}"
    assert payload["failed_steps"][0]["step"] == "raw__alert_probe"

    failure_logs = [entry for entry in logs if entry["event"] == "run_failed"]
    assert len(failure_logs) == 1
    assert failure_logs[0]["run_id"] == run_id
    assert failure_logs[0]["assets"] == ["raw/alert_probe"]


def test_sensor_without_webhook_only_logs(
    failed_run: tuple[dg.DagsterInstance, dg.ExecuteInProcessResult],
    settings_env: pytest.MonkeyPatch,
) -> None:
    instance, result = failed_run
    with capture_logs() as logs:
        _evaluate_sensor(instance, result)
    events = [entry["event"] for entry in logs]
    assert events.count("run_failed") == 1
    assert not [event for event in events if event.startswith("webhook_")]


def test_sensor_survives_a_silent_webhook(
    failed_run: tuple[dg.DagsterInstance, dg.ExecuteInProcessResult],
    silent_url: str,
    settings_env: pytest.MonkeyPatch,
) -> None:
    settings_env.setenv("ALERT_WEBHOOK_URL", silent_url)
    settings_env.setattr(alerts, "DEFAULT_POLICY", FAST)
    instance, result = failed_run
    started = time.monotonic()
    with capture_logs() as logs:
        _evaluate_sensor(instance, result)  # must not raise
    assert time.monotonic() - started < 5
    assert [entry["event"] for entry in logs].count("webhook_failed") == 1
