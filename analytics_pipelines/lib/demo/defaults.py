"""The demo generator's defaults, light to import (the CLI's parser shows them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from analytics_pipelines.lib.demo.errors import DemoError

# A Monday: the demo's weeks line up with ISO weeks.
DEFAULT_START = date(2026, 1, 5)


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
