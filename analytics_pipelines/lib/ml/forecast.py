"""Forecast a KPI's day series `horizon_days` ahead and store them in `kpi.forecast_values`.

Every run refits every series on the values stored now and replaces the KPI's rows in one
transaction: a corrected or late value (the KPI refresh recomputed a past day) is in the next
forecast, which runs after each refresh of the KPI (defs/ml).
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from psycopg2 import sql

from analytics_pipelines.lib.catalog import KpiSpec
from analytics_pipelines.lib.ml.models import (
    FORECAST_TIERS,
    Tier,
    forecast_frame,
    long_frame,
    tier_for,
)
from analytics_pipelines.lib.ml.series import Series, read_series
from analytics_pipelines.lib.pg import DbApiConnection

if TYPE_CHECKING:
    import pandas as pd

PREVIEW_DAYS = 7
FORECAST_COLUMNS = [
    "kpi",
    "dimensions",
    "period_date",
    "step",
    "mean",
    "lo80",
    "hi80",
    "lo95",
    "hi95",
    "model",
    "history_days",
    "last_observed",
]


@dataclass(frozen=True)
class ForecastResult:
    kpi: str
    rows: int = 0
    series: int = 0
    models: dict[str, int] = field(default_factory=dict)  # model -> series it forecast
    skipped: dict[str, str] = field(default_factory=dict)  # series key -> why
    # The total's first days ahead: (day, mean, lo80, hi80, lo95, hi95), for the asset's preview.
    total_preview: list[tuple[dt.date, float, float, float, float, float]] = field(
        default_factory=list
    )


def forecast_series(series: list[Series], horizon: int, n_jobs: int = 1) -> pd.DataFrame:
    """One row per series and day ahead, FORECAST_COLUMNS without `kpi`, the intervals nested
    (lo95 <= lo80 <= mean <= hi80 <= hi95)."""
    import numpy as np
    import pandas as pd

    parts = []
    by_tier: dict[Tier, list[Series]] = {}
    for one in series:
        tier = tier_for(len(one.values), FORECAST_TIERS)
        if tier is not None:
            by_tier.setdefault(tier, []).append(one)
    for tier, members in sorted(by_tier.items(), key=lambda item: item[0].name):
        frame = long_frame(
            [m.key for m in members], [m.first_day for m in members], [m.filled() for m in members]
        )
        predicted = forecast_frame(frame, tier, horizon, n_jobs)
        mean = predicted["model"].to_numpy(dtype=np.float64)
        # A model may give a degenerate interval (width 0), never crossed bounds; the clipping
        # keeps float rounding from breaking the nesting the table checks.
        lo80 = np.minimum(predicted["model-lo-80"].to_numpy(dtype=np.float64), mean)
        hi80 = np.maximum(predicted["model-hi-80"].to_numpy(dtype=np.float64), mean)
        lo95 = np.minimum(predicted["model-lo-95"].to_numpy(dtype=np.float64), lo80)
        hi95 = np.maximum(predicted["model-hi-95"].to_numpy(dtype=np.float64), hi80)
        about = pd.DataFrame(
            {
                "dimensions": [m.key for m in members],
                "history_days": [m.observed for m in members],
                "last_observed": pd.to_datetime([m.last_day for m in members]),
            }
        )
        part = pd.DataFrame(
            {
                "dimensions": predicted["unique_id"].astype(str).to_numpy(),
                "period_date": predicted["ds"].to_numpy(),
                "mean": mean,
                "lo80": lo80,
                "hi80": hi80,
                "lo95": lo95,
                "hi95": hi95,
                "model": tier.name,
            }
        ).merge(about, on="dimensions", how="left")
        part["step"] = (part["period_date"] - part["last_observed"]).dt.days
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=FORECAST_COLUMNS[1:])
    return pd.concat(parts, ignore_index=True)[FORECAST_COLUMNS[1:]]


def forecast_kpi(
    conn: DbApiConnection, kpi: KpiSpec, today: dt.date, n_jobs: int = 1
) -> ForecastResult:
    """Fit and forecast every series of `kpi` on its complete days (before `today`, local) and
    replace its rows of `kpi.forecast_values` in the caller's transaction."""
    spec = kpi.forecast
    if spec is None:
        raise ValueError(f"kpi {kpi.name} declares no forecast")
    found = read_series(conn, kpi, today)
    rows = forecast_series(found.usable, spec.horizon_days, n_jobs)
    _replace_rows(conn, kpi, rows)
    models = rows.groupby("model")["dimensions"].nunique().to_dict() if len(rows) else {}
    total = rows[rows["dimensions"] == "{}"].head(PREVIEW_DAYS)
    preview = [
        (day.date(), *(float(total[c].iloc[i]) for c in ("mean", "lo80", "hi80", "lo95", "hi95")))
        for i, day in enumerate(total["period_date"])
    ]
    return ForecastResult(
        kpi.name,
        len(rows),
        len(found.usable),
        {str(k): int(v) for k, v in models.items()},
        found.skipped,
        preview,
    )


def _replace_rows(conn: DbApiConnection, kpi: KpiSpec, rows: pd.DataFrame) -> None:
    buffer = io.StringIO()
    rows.assign(kpi=kpi.name)[FORECAST_COLUMNS].to_csv(
        buffer, index=False, header=False, date_format="%Y-%m-%d", float_format="%.17g"
    )
    buffer.seek(0)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in FORECAST_COLUMNS)
    with conn.cursor() as cursor:
        # Concurrent runs of the same KPI's forecast take turns.
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%(key)s))", {"key": f"ml-forecast:{kpi.name}"}
        )
        cursor.execute(
            sql.SQL(
                "CREATE TEMP TABLE ml_forecast_stage ON COMMIT DROP AS "
                "SELECT {} FROM kpi.forecast_values WITH NO DATA"
            ).format(columns)
        )
        cursor.copy_expert(
            sql.SQL("COPY ml_forecast_stage ({}) FROM STDIN WITH (FORMAT csv)").format(columns),
            buffer,
        )
        cursor.execute("DELETE FROM kpi.forecast_values WHERE kpi = %(kpi)s", {"kpi": kpi.name})
        cursor.execute(
            sql.SQL(
                "INSERT INTO kpi.forecast_values ({columns}, period_start) "
                "SELECT {columns}, timezone(%(tz)s, CAST(period_date AS timestamp)) "
                "FROM ml_forecast_stage"
            ).format(columns=columns),
            {"tz": kpi.timezone},
        )
        cursor.execute("DROP TABLE ml_forecast_stage")
