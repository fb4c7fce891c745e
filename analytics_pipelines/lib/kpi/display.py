"""How KPI numbers, periods and dimension columns are written for people (CLI tables, previews,
check descriptions, view columns); no heavy imports, so read-only commands can use it."""

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


def is_currency(unit: str) -> bool:
    """ISO 4217-style units (EUR, USD, CHF) are amounts of money."""
    return len(unit) == 3 and unit.isalpha() and unit.isupper()


def format_value(value: Decimal | None, unit: str) -> str:
    """A value as a table shows it: thousands separated, money with two decimals
    (81,127.50 EUR), other values as `format_number` (1,250 tickets, 0.0512 share)."""
    if value is None:
        return ""
    if is_currency(unit):
        return f"{value:,.2f}"
    text = format_number(value)
    whole, dot, fraction = text.partition(".")
    return f"{int(whole):,}" + dot + fraction if whole.lstrip("-").isdigit() else text


def period_label(grain: Grain, start: dt.datetime, fiscal_year_start_month: int = 1) -> str:
    """How people write the period: 2026-03-29 02:00+01:00, 2026-03-29, 2026-03, 2026-Q1, 2026.

    In a fiscal year starting in another month than January, quarters and years are FY2026 Q1
    and FY2026, named by the calendar year the fiscal year ends in (April 2025 .. March 2026 is
    FY2026).
    """
    if fiscal_year_start_month != 1 and grain in ("quarter", "year"):
        ends_in = start.year + 1 if start.month >= fiscal_year_start_month else start.year
        if grain == "year":
            return f"FY{ends_in}"
        return f"FY{ends_in} Q{(start.month - fiscal_year_start_month) % 12 // 3 + 1}"
    if grain == "hour":
        return start.isoformat(sep=" ", timespec="minutes")
    if grain in ("day", "week"):
        return start.date().isoformat()
    if grain == "month":
        return f"{start.year}-{start.month:02d}"
    if grain == "quarter":
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    return str(start.year)


# The fixed columns of a KPI's view `kpi.<name>` (lib/kpi/views.py).
VIEW_COLUMNS = (
    "grain",
    "period_start_local",
    "period_end_local",
    "period_start",
    "period_end",
    "breakdown",
    "value",
    "target",
    "target_status",
    "previous_value",  # lib/kpi/period_over_period.py
    "previous_diff",
    "previous_growth",
    "year_ago_value",
    "year_ago_diff",
    "year_ago_growth",
    "computed_at",
)


def dimension_column(name: str) -> str:
    """View column of a dimension (`customer.segment` is `customer_segment`); a dimension named
    like a fixed column gets a `_dim` suffix."""
    name = name.replace(".", "_")
    return f"{name}_dim" if name in VIEW_COLUMNS else name
