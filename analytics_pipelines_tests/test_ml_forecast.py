"""Forecasts: one row per series and day ahead with nested 80 % / 95 % intervals, the model
chosen by history length, the skipped series named with their reason, and a recomputed past
value reaching the next forecast."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import sqlalchemy as sa

from analytics_pipelines.lib.ml.forecast import forecast_kpi
from analytics_pipelines.lib.warehouse import Warehouse, dbapi_connection
from analytics_pipelines_tests.test_ml_support import FIRST_DAY, TODAY, MlKpi, weekly_values

HORIZON = 7


def _forecast(kpi: MlKpi) -> pd.DataFrame:
    with kpi.warehouse.begin() as conn:
        result = forecast_kpi(dbapi_connection(conn), kpi.kpi, TODAY)
    kpi.result = result  # type: ignore[attr-defined]
    with kpi.warehouse.connect() as conn:
        return pd.read_sql(
            sa.text("SELECT * FROM kpi.forecasts WHERE kpi = :kpi ORDER BY series, period_date"),
            conn,
            params={"kpi": kpi.kpi.name},
        )


def test_forecast_rows_intervals_and_models(warehouse: Warehouse) -> None:
    kpi = MlKpi(warehouse, forecast={"horizon_days": HORIZON})
    kpi.set_series("north", weekly_values(42, seed=2))  # six weeks: weekly AutoETS
    kpi.set_series("south", weekly_values(20, seed=3, level=50))  # under four: seasonal naive
    kpi.set_series("east", np.full(30, 7.0))  # constant: skipped, with the reason
    kpi.set_series("west", weekly_values(5))  # short: skipped
    rows = _forecast(kpi)
    result = kpi.result  # type: ignore[attr-defined]

    assert sorted(rows["series"].unique()) == ["region=north", "region=south", "total"]
    last_day = FIRST_DAY + dt.timedelta(days=41)
    for series, group in rows.groupby("series"):
        assert len(group) == HORIZON, series
        assert list(group["step"]) == list(range(1, HORIZON + 1))
        assert list(group["period_date"]) == [
            last_day + dt.timedelta(days=i)
            if series != "region=south"
            else FIRST_DAY + dt.timedelta(days=19 + i)
            for i in range(1, HORIZON + 1)
        ]
    ordered = (
        (rows["lo95"] <= rows["lo80"])
        & (rows["lo80"] <= rows["mean"])
        & (rows["mean"] <= rows["hi80"])
        & (rows["hi80"] <= rows["hi95"])
    )
    assert ordered.all()
    assert (rows["hi95"] - rows["lo95"] > rows["hi80"] - rows["lo80"]).all()
    models = dict(zip(rows["series"], rows["model"], strict=False))
    assert models["region=north"] == "AutoETS(7)"
    assert models["region=south"] == "SeasonalNaive(7)"
    # Seasonal naive repeats the last week: compare with the values themselves.
    south = weekly_values(20, seed=3, level=50)
    assert np.allclose(rows.loc[rows["series"] == "region=south", "mean"], south[13:20])
    # The weekly model follows the weekly pattern: Saturday and Sunday low, Friday high.
    north = rows[rows["series"] == "region=north"].set_index("period_date")["mean"]
    weekday = {d.weekday(): v for d, v in north.items()}
    assert weekday[4] > weekday[0] > weekday[6]
    assert result.skipped == {
        '{"region": "east"}': "constant: 30 day(s) of 7; no variation to model",
        '{"region": "west"}': "short: 5 day(s) of history, a model needs 14",
    }
    # Local midnight of each day in the KPI's zone (UTC here).
    assert (rows["period_start"].dt.tz_convert("UTC").dt.date == rows["period_date"]).all()


def test_a_recomputed_day_reaches_the_next_forecast(warehouse: Warehouse) -> None:
    kpi = MlKpi(warehouse, forecast={"horizon_days": HORIZON})
    values = weekly_values(21, seed=4)
    kpi.set_series("north", values)
    before = _forecast(kpi)
    # Late data doubles last Monday: the seasonal-naive forecast for next Monday follows.
    monday = FIRST_DAY + dt.timedelta(days=14)
    kpi.set({"north": {monday: float(values[14] * 2)}})
    after = _forecast(kpi)
    pick = lambda f: f.loc[  # noqa: E731
        (f["series"] == "region=north") & (f["period_date"] == monday + dt.timedelta(days=7)),
        "mean",
    ].item()
    assert pick(before) == values[14]
    assert pick(after) == values[14] * 2
