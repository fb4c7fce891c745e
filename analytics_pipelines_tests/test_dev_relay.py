"""`dev` relays the UI's output; after Ctrl-C, Dagster's report of a sensor tick cut short by
the daemon's shutdown becomes one line (its unnamed first report left out), and so does a
traceback (chained or not) printed by a process that outlived the UI once it is being stopped;
every other line passes unchanged."""

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
# The tick's own context reports the same exception first, without the sensor's name.
TICK_REPORT = REPORT.replace(
    "Sensor daemon caught an error for sensor kpi_invalidation_sensor",
    "Sensor tick caught an error",
)
OTHER_FAILURE = REPORT.replace(
    "dagster._core.errors.DagsterCodeLocationNotFoundError: Location analytics_pipelines does "
    "not exist in workspace",
    "psycopg2.OperationalError: connection refused",
)
# The same race reported with the exception it was raised from, chained before it.
CHAINED_REPORT = REPORT.replace(
    "Traceback",
    "Traceback (most recent call last):\n"
    '  File ".../dagster/_grpc/client.py", line 180, in _query\n'
    "dagster._core.errors.DagsterUserCodeUnreachableError: Could not reach user code server\n"
    "\n"
    "The above exception was the direct cause of the following exception:\n"
    "\n"
    "Traceback",
)
AFTER = "2026-12-03 08:32:27 +0000 - dagster - INFO - Dagster services shut down.\n"
# What a code server printed in CI on the SIGTERM sent to the processes that outlived `dg dev`.
LEFTOVER = (
    "Traceback (most recent call last):\n"
    '  File ".../grpc/_server.py", line 1219, in wait_for_termination\n'
    "    return _common.wait(\n"
    "           ^^^^^^^^^^^^^\n"
    "KeyboardInterrupt\n"
    "\n"
    "During handling of the above exception, another exception occurred:\n"
    "\n"
    "Traceback (most recent call last):\n"
    '  File ".../threading.py", line 331, in wait\n'
    "    waiter.release()\n"
    "RuntimeError: release unlocked lock\n"
)
LEFTOVER_NOTE = (
    "a Dagster process stopped by the shutdown reported: RuntimeError: release unlocked lock\n"
)
SENSOR_NOTE = (
    "the tick of kpi_invalidation_sensor in flight at Ctrl-C stopped before submitting its run\n"
)


def relayed(text: str, *, stopping: bool, ending: bool = False) -> str:
    """What the user sees of `text`, relayed after Ctrl-C (stopping) and once the leftovers are
    being stopped (ending)."""
    stopping_event, ending_event = threading.Event(), threading.Event()
    if stopping:
        stopping_event.set()
    if ending:
        ending_event.set()
    sink = io.BytesIO()
    _relay(io.BytesIO(text.encode()), sink, stopping_event, ending_event)
    return sink.getvalue().decode()


def test_the_shutdown_race_after_ctrl_c_becomes_one_line() -> None:
    out = relayed(REPORT + REPORT + AFTER, stopping=True)
    assert out == SENSOR_NOTE + SENSOR_NOTE + AFTER
    assert "Traceback" not in out


def test_the_ticks_own_report_of_the_race_leaves_one_named_line() -> None:
    # As Dagster 1.13 logs it: the tick's context, then the daemon's loop naming the sensor.
    out = relayed(TICK_REPORT + REPORT + AFTER, stopping=True)
    assert out == SENSOR_NOTE + AFTER


def test_other_reports_and_reports_while_running_pass_unchanged() -> None:
    assert relayed(OTHER_FAILURE + AFTER, stopping=True) == OTHER_FAILURE + AFTER
    assert relayed(REPORT + AFTER, stopping=False) == REPORT + AFTER
    other_tick_failure = OTHER_FAILURE.replace(
        "Sensor daemon caught an error for sensor kpi_invalidation_sensor",
        "Sensor tick caught an error",
    )
    assert relayed(other_tick_failure + AFTER, stopping=True) == other_tick_failure + AFTER
    assert relayed(TICK_REPORT + AFTER, stopping=False) == TICK_REPORT + AFTER


def test_a_report_cut_off_by_the_end_of_output_is_kept() -> None:
    cut = REPORT.split("dagster._core")[0]
    assert relayed(cut, stopping=True) == cut


def test_a_chained_shutdown_race_is_one_report() -> None:
    assert CHAINED_REPORT.count("Traceback") == 2
    assert relayed(CHAINED_REPORT + "\n" + AFTER, stopping=True) == SENSOR_NOTE + "\n" + AFTER


def test_a_leftover_stopped_at_shutdown_reports_its_chained_traceback_in_one_line() -> None:
    # Its last words, then the end of its output.
    assert relayed(AFTER + LEFTOVER, stopping=True, ending=True) == AFTER + LEFTOVER_NOTE
    # Followed by more output, each report on its own line and the rest as it came.
    out = relayed(LEFTOVER + LEFTOVER + "\n" + AFTER, stopping=True, ending=True)
    assert out == LEFTOVER_NOTE + LEFTOVER_NOTE + "\n" + AFTER
    assert "Traceback" not in out


def test_a_traceback_before_the_leftovers_are_stopped_passes_unchanged() -> None:
    assert relayed(LEFTOVER + AFTER, stopping=False) == LEFTOVER + AFTER
    assert relayed(LEFTOVER + AFTER, stopping=True) == LEFTOVER + AFTER


def test_a_chained_report_cut_off_by_the_end_of_output_is_kept() -> None:
    for cut in (
        LEFTOVER.split("RuntimeError")[0],  # in its second part
        LEFTOVER.split("\nTraceback")[0],  # right after the chain marker
        CHAINED_REPORT.split("dagster._core.errors.DagsterCodeLocationNotFoundError")[0],
    ):
        assert relayed(cut, stopping=True, ending=True) == cut
