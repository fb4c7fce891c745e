"""The demo generator's defaults, light to import (the CLI's parser shows them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from analytics_pipelines.lib.demo.errors import DemoError

# A Monday: the demo's weeks line up with ISO weeks.
DEFAULT_START = date(2026, 1, 5)
# Relative activity per weekday (Monday first): quieter weekends, a busy Friday, the weekly
# pattern the forecasts of lib/ml learn.
WEEKDAY_ACTIVITY = (1.0, 1.0, 1.05, 1.0, 1.15, 0.8, 0.7)
# A promotion day of `make dev`'s demo: 2.5 times the usual activity on Wednesday 25 February,
# the anomaly `kpi anomalies gross_revenue` and the UI's `no_anomalies` check show.
PROMOTION_DAY = date(2026, 2, 25)
PROMOTION_ACTIVITY = 2.5


def demo_activity(start: date, days: int) -> dict[date, float]:
    """Activity factors of the demo's days: the weekday pattern and the promotion day."""
    activity = {
        start + timedelta(days=i): WEEKDAY_ACTIVITY[(start + timedelta(days=i)).weekday()]
        for i in range(days)
    }
    if PROMOTION_DAY in activity:
        activity[PROMOTION_DAY] *= PROMOTION_ACTIVITY
    return activity


@dataclass(frozen=True)
class Shares:
    """Fractions of each file's rows: rule-breaking, repeated primary keys, events from earlier days."""

    bad: float = 0.015
    duplicate: float = 0.01
    late: float = 0.01

    def __post_init__(self) -> None:
        for name in ("bad", "duplicate", "late"):
            value = getattr(self, name)
            if not 0.0 <= value <= 0.2:
                raise DemoError(f"{name} share must be between 0 and 0.2, got {value}")


DEFAULT_SHARES = Shares()
