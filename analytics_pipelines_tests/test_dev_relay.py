"""`dev` relays the UI's output; after Ctrl-C, Dagster's report of a sensor tick cut short by
the daemon's shutdown becomes one line, and every other line passes unchanged."""

from __future__ import annotations

import io
import threading

from analytics_pipelines.cli.dev import _relay

ESC = "\x1b"
REPORT = (
    f"{ESC}[32m2026-12-03 08:32:27 +0000{ESC}[0m - dagster.daemon.SensorDaemon - {ESC}[34mERROR"
    f"{ESC}[0m - {ESC}[31mSensor daemon caught an error for sensor kpi_invalidation_sensor{ESC}[0m\n"
    "Traceback (most recent call last):\n"
    '  File ".../dagster/_daemon/sensor.py", line 649, in _process_tick_generator\n'
    "    yield from _evaluate_sensor(\n"
    "               ^^^^^^^^^^^^^^^^\n"
    "dagster._core.errors.DagsterCodeLocationNotFoundError: Location analytics_pipelines does "
    "not exist in workspace\n"
)
OTHER_FAILURE = REPORT.replace(
    "dagster._core.errors.DagsterCodeLocationNotFoundError: Location analytics_pipelines does "
    "not exist in workspace",
    "psycopg2.OperationalError: connection refused",
)
AFTER = "2026-12-03 08:32:27 +0000 - dagster - INFO - Dagster services shut down.\n"


def relayed(text: str, *, stopping: bool) -> str:
    event = threading.Event()
    if stopping:
        event.set()
    sink = io.BytesIO()
    _relay(io.BytesIO(text.encode()), sink, event)
    return sink.getvalue().decode()


def test_the_shutdown_race_after_ctrl_c_becomes_one_line() -> None:
    out = relayed(REPORT + REPORT + AFTER, stopping=True)
    line = "the tick of kpi_invalidation_sensor in flight at Ctrl-C stopped before submitting its run\n"
    assert out == line + line + AFTER
    assert "Traceback" not in out


def test_other_reports_and_reports_while_running_pass_unchanged() -> None:
    assert relayed(OTHER_FAILURE + AFTER, stopping=True) == OTHER_FAILURE + AFTER
    assert relayed(REPORT + AFTER, stopping=False) == REPORT + AFTER


def test_a_report_cut_off_by_the_end_of_output_is_kept() -> None:
    cut = REPORT.split("dagster._core")[0]
    assert relayed(cut, stopping=True) == cut
