"""How KPI numbers and periods are written for people (CLI tables, previews, check descriptions);
no heavy imports, so read-only commands can use it."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from analytics_pipelines.lib.catalog.models import Grain


def format_number(value: Decimal | None) -> str:
    """Integers without decimals, other values with at most four: 31250, 0.0512, 2.5."""
    if value is None:
        return ""
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return f"{value:.4f}".rstrip("0").rstrip(".")


def period_label(grain: Grain, start: dt.datetime) -> str:
    """How people write the period: 2026-03-29 02:00+01:00, 2026-03-29, 2026-03, 2026-Q1, 2026."""
    if grain == "hour":
        return start.isoformat(sep=" ", timespec="minutes")
    if grain in ("day", "week"):
        return start.date().isoformat()
    if grain == "month":
        return f"{start.year}-{start.month:02d}"
    if grain == "quarter":
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    return str(start.year)
