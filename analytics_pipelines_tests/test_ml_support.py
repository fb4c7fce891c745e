"""Helpers of the ML tests: a KPI `sum(qty)` by region whose day values are chosen by the test,
computed by the real KPI refresh from clean rows (one row per day and region)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import numpy as np
import sqlalchemy as sa

from analytics_pipelines.lib.catalog import KpiSpec, SourceSpec
from analytics_pipelines.lib.kpi.engine import refresh_kpi
from analytics_pipelines.lib.kpi.plan import plan_kpi
from analytics_pipelines.lib.tables import clean_table
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_kpi_support import (
    create_clean,
    make_catalog,
    make_kpi,
    make_source,
    unique,
)

FIRST_DAY = dt.date(2026, 1, 5)  # a Monday
TODAY = dt.date(2026, 12, 1)  # every test day is complete


def weekly_values(days: int, seed: int = 1, level: float = 100.0) -> np.ndarray:
    """A weekly pattern with noise: what a day KPI looks like."""
    rng = np.random.default_rng(seed)
    weekday = np.array([1.0, 1.1, 1.05, 1.0, 1.2, 0.7, 0.6])
    return np.round(level * weekday[np.arange(days) % 7] + rng.normal(0, 2, days))


class MlKpi:
    """A KPI over a clean table of its own; `set` writes day values and refreshes those days."""

    def __init__(self, warehouse: Warehouse, **fields: Any) -> None:
        self.warehouse = warehouse
        self.source: SourceSpec = make_source(unique("ml_src"))
        fields.setdefault("forecast", {"horizon_days": 7})
        fields.setdefault("anomalies", {"sensitivity": "medium"})
        self.kpi: KpiSpec = make_kpi(
            unique("ml_kpi"),
            self.source.name,
            measure="sum(qty)",
            dimensions=["region"],
            grains=["day"],
            **fields,
        )
        self.plan = plan_kpi(make_catalog([self.source], [self.kpi]), self.kpi.name)
        create_clean(warehouse, self.source, [])

    def set(self, values: Mapping[str, Mapping[dt.date, float]]) -> None:
        """region -> day -> value; replaces those (day, region) rows, then refreshes the days."""
        table = clean_table(self.source)
        rows = [
            {
                "line_id": f"{region}-{day}",
                "at": dt.datetime.combine(day, dt.time(12), dt.UTC),
                "region": region,
                "qty": int(value),
                "price": Decimal(1),
            }
            for region, days in values.items()
            for day, value in days.items()
        ]
        with self.warehouse.begin() as conn:
            conn.execute(table.delete().where(table.c.line_id.in_([r["line_id"] for r in rows])))
        create_clean(self.warehouse, self.source, rows)
        days = sorted({day for by_day in values.values() for day in by_day})
        refresh_kpi(self.warehouse, self.plan, days[0], days[-1])

    def remove(self, region: str, day: dt.date) -> None:
        """The source withdraws the row of (day, region); the refresh drops that cell."""
        table = clean_table(self.source)
        with self.warehouse.begin() as conn:
            conn.execute(table.delete().where(table.c.line_id == f"{region}-{day}"))
        refresh_kpi(self.warehouse, self.plan, day, day)

    def set_series(self, region: str, values: np.ndarray, first: dt.date = FIRST_DAY) -> None:
        self.set({region: {first + dt.timedelta(days=i): float(v) for i, v in enumerate(values)}})

    def verdicts(self) -> dict[tuple[str, dt.date], tuple[Any, ...]]:
        """(series label, day) -> (anomalous, direction, expected, lo, hi, value, alerted_at)."""
        with self.warehouse.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT coalesce(dimensions ->> 'region', 'total') AS series, period_date, "
                    "anomalous, direction, expected, lo, hi, value, alerted_at "
                    "FROM kpi.anomaly_verdicts WHERE kpi = :kpi"
                ),
                {"kpi": self.kpi.name},
            ).all()
        return {(r.series, r.period_date): tuple(r[2:]) for r in rows}
