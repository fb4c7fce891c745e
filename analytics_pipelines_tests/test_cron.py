"""The catalog's cron check gives Dagster's own verdict on every expression, without importing Dagster."""

from __future__ import annotations

import warnings

import dagster as dg
import pytest

from analytics_pipelines.lib.catalog.cron import is_valid_cron

EXPRESSIONS = [
    "0 * * * *",
    "*/15 * * * *",
    "@daily",
    "@hourly",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
    "@midnight",
    "@reboot",
    "0 0 * * * 0",
    "0 0 * * * * *",
    "*/0 * * * *",
    "60 * * * *",
    "0 24 * * *",
    "0 0 31 2 *",
    "0 0 30 2 *",
    "0 0 29 2 *",
    "0 0 31 2,3 *",
    "1-5 * * * *",
    "5-1 * * * *",
    "0 0 * * MON",
    "0 0 * JAN *",
    "0 0 * jan-mar mon-fri",
    "0 0 1,15 * *",
    "0 0 * * 7",
    "0 0 * * 8",
    "0 0 L * *",
    "0 0 * * 5L",
    "0 0 * * 1#2",
    "0 0 1W * *",
    "H * * * *",
    "* * * *",
    "",
    "  0 * * * *  ",
    "0  *  * * *",
    "0 0 ? * *",
    "a b c d e",
    "0 0 0 * *",
    "0 0 32 * *",
    "0 0 * 13 *",
    "0 0 * 0 *",
    "*/5,10 * * * *",
    "0-59/15 * * * *",
    "0 9-17/2 * * 1-5",
    "0 0 1 */3 *",
    "0 0 * * sun,sat",
    "-1 * * * *",
    "0 0 * * 0-7",
    "0 0 1 1 * 2026",
]


def dagster_accepts(expression: str) -> bool:
    """Dagster's verdict, through its public API: does a schedule with this cron build?"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dg.ScheduleDefinition(name="cron_check", cron_schedule=expression, job_name="j")
        except dg.DagsterInvalidDefinitionError:
            return False
    return True


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_same_verdict_as_dagster(expression: str) -> None:
    assert is_valid_cron(expression) == dagster_accepts(expression)


def test_the_table_holds_both_verdicts() -> None:
    verdicts = {dagster_accepts(e) for e in EXPRESSIONS}
    assert verdicts == {True, False}
