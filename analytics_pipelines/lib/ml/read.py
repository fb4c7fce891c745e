"""Stored anomaly verdicts and forecasts as people read them (psycopg2 only: `kpi anomalies`
starts fast, and the Dagster check and the alerts read the same rows)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from analytics_pipelines.lib.pg import DbApiConnection, fetch_all

_ANOMALIES = """
SELECT a.dimensions::text AS series_key, a.period_date, a.value, a.expected, a.lo, a.hi,
       a.level, a.direction, a.deviation, a.score, a.model, a.history_days, a.judged_at,
       a.alerted_at
FROM kpi.anomaly_verdicts AS a
WHERE a.kpi = %(kpi)s AND a.anomalous
  AND (%(first)s::date IS NULL OR a.period_date >= %(first)s::date)
  AND (%(last)s::date IS NULL OR a.period_date <= %(last)s::date)
ORDER BY a.period_date, a.dimensions::text
LIMIT %(limit)s
"""

_UNALERTED = """
SELECT a.kpi, a.dimensions::text AS series_key, a.period_date, a.value, a.expected, a.lo,
       a.hi, a.level, a.direction, a.deviation, a.score, a.model, a.history_days, a.judged_at,
       a.alerted_at
FROM kpi.anomaly_verdicts AS a
WHERE a.kpi = %(kpi)s AND a.anomalous AND a.alerted_at IS NULL
ORDER BY a.period_date, a.dimensions::text
LIMIT %(limit)s
"""


@dataclass(frozen=True)
class Anomaly:
    kpi: str
    series_key: str  # JSON of the dimensions, {} for the total
    period_date: dt.date
    value: Decimal
    expected: float
    lo: float
    hi: float
    level: float
    direction: str
    deviation: float
    score: float | None  # None: the interval had no width
    model: str
    history_days: int
    judged_at: dt.datetime
    alerted_at: dt.datetime | None

    @property
    def series(self) -> str:
        from analytics_pipelines.lib.ml.series import series_label

        return series_label(self.series_key)

    def as_json(self) -> dict[str, Any]:
        return {
            "kpi": self.kpi,
            "series": self.series,
            "period": self.period_date.isoformat(),
            "value": float(self.value),
            "expected": self.expected,
            "lo": self.lo,
            "hi": self.hi,
            "level": self.level,
            "direction": self.direction,
            "deviation": self.deviation,
            "score": self.score,
            "model": self.model,
            "history_days": self.history_days,
            "judged_at": self.judged_at.isoformat(),
            "alerted_at": self.alerted_at.isoformat() if self.alerted_at else None,
        }


def read_anomalies(
    conn: DbApiConnection,
    kpi: str,
    first: dt.date | None = None,
    last: dt.date | None = None,
    limit: int = 10_000,
) -> list[Anomaly]:
    """The anomalous day cells of `kpi` in [first, last] (open ends: all), oldest first."""
    rows = fetch_all(conn, _ANOMALIES, {"kpi": kpi, "first": first, "last": last, "limit": limit})
    return [Anomaly(kpi, **row._asdict()) for row in rows]


def unalerted_anomalies(conn: DbApiConnection, kpi: str, limit: int) -> list[Anomaly]:
    return [
        Anomaly(**row._asdict())
        for row in fetch_all(conn, _UNALERTED, {"kpi": kpi, "limit": limit})
    ]


def mark_alerted(conn: DbApiConnection, kpi: str, series_key: str, day: dt.date) -> None:
    with conn.cursor() as cursor:
        cursor.execute(
            "UPDATE kpi.anomaly_verdicts SET alerted_at = now() WHERE kpi = %(kpi)s "
            "AND dimensions = CAST(%(key)s AS jsonb) AND period_date = %(day)s",
            {"kpi": kpi, "key": series_key, "day": day},
        )


def latest_judged_day(conn: DbApiConnection, kpi: str) -> dt.date | None:
    rows = fetch_all(
        conn,
        "SELECT max(period_date) AS day FROM kpi.anomaly_verdicts WHERE kpi = %(kpi)s",
        {"kpi": kpi},
    )
    return rows[0].day if rows else None
