"""Logs are readable in development, JSON in production, and carry run id, asset and partition in runs."""

import json

import dagster as dg
import pytest

from analytics_pipelines.lib.logging import (
    bound_context,
    configure_logging,
    get_logger,
    run_context_fields,
)


def test_json_lines_with_redacted_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO")
    get_logger("test").info("loaded", rows=3, password="hunter2")
    get_logger("test").debug("hidden")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "loaded"
    assert event["rows"] == 3
    assert event["level"] == "info"
    assert event["password"] == "***"


def test_console_format_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console", "INFO")
    get_logger().info("loaded", rows=3)
    line = capsys.readouterr().err
    assert "loaded" in line
    assert "rows=3" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_run_id_asset_and_partition_are_bound_inside_a_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "INFO")

    @dg.asset(
        partitions_def=dg.DailyPartitionsDefinition(start_date="2026-01-01"), key=["kpi", "demo"]
    )
    def demo(context: dg.AssetExecutionContext) -> None:
        with bound_context(**run_context_fields(context)):
            get_logger().info("computing")

    result = dg.materialize([demo], partition_key="2026-01-02")
    events = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    computing = [e for e in events if e["event"] == "computing"]
    assert computing == [
        {
            "event": "computing",
            "run_id": result.run_id,
            "asset_key": "kpi/demo",
            "partition_key": "2026-01-02",
            "level": "info",
            "timestamp": computing[0]["timestamp"],
        }
    ]
