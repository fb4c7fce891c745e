"""Cron expressions as strict as Dagster's schedules, without importing Dagster.

Dagster runs the refresh schedules, so its verdict is the one that counts: it accepts what
croniter (which it vendors) accepts, if the expression expands to five fields (no seconds) and
does not name only the 30th or 31st of February. This module applies the same rule with the
croniter package, so reading the catalog (every CLI command) does not pay Dagster's import.
`analytics_pipelines_tests/test_cron.py` checks both verdicts agree on a table of expressions.
"""

from __future__ import annotations

from croniter import croniter

FEBRUARY = 2
CRON_FIELDS = 5


def is_valid_cron(expression: str) -> bool:
    """True when Dagster would accept `expression` as a schedule's cron."""
    if not croniter.is_valid(expression):
        return False
    try:
        expanded, *_ = croniter.expand(expression)
    except (ValueError, KeyError):
        return False
    if len(expanded) != CRON_FIELDS:
        return False
    days, months = expanded[2], expanded[3]
    return not (months == [FEBRUARY] and len(days) == 1 and days[0] in {30, 31})
