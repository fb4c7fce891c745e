"""Which statsforecast model a series gets, by how much history it has.

Forecasts: two years or more get MSTL with weekly and yearly seasonality (the deseasonalised
level by AutoETS);
four weeks or more AutoETS with a weekly season; two weeks or more the seasonal-naive forecast
(same weekday last week), whose intervals come from its residuals. Anomaly verdicts use an
additive ETS with a weekly season (additive errors, no trend, additive weekly season): one fit
costs ~20 ms and one forward step under 1 ms, so judging day by day with a refit every four
weeks stays cheap.

statsforecast is imported inside these functions: loading the definitions or starting the CLI
never pays for it (about 3 s the first time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

WEEK = 7
YEAR = 365
# History each forecast model needs: MSTL two full yearly cycles, weekly ETS four weeks.
MSTL_MIN_DAYS = 2 * YEAR
ETS_MIN_DAYS = 4 * WEEK
# STL smoothers evaluated every 10th point and interpolated: 7x faster on 730 days, the same
# forecasts to within noise on the benchmark (bench/ml_bench.py); 1,000 series fit in < 60 s.
STL_JUMPS = {"seasonal_jump": 10, "trend_jump": 10, "low_pass_jump": 10}
# Anomaly model: parameters refitted every this many judged days (state updated every day).
REFIT_EVERY_DAYS = 28
# Anomalous days in a row, same direction, after which they are taken as a new level.
NEW_LEVEL_AFTER_DAYS = 3
FORECAST_LEVELS = [80, 95]


@dataclass(frozen=True)
class Tier:
    """A model for series with at least `min_days` of history."""

    name: str  # stored in the `model` column
    min_days: int


MSTL_TIER = Tier("MSTL(7,365)+AutoETS", MSTL_MIN_DAYS)
ETS_TIER = Tier("AutoETS(7)", ETS_MIN_DAYS)
NAIVE_TIER = Tier("SeasonalNaive(7)", 2 * WEEK)
FORECAST_TIERS = (MSTL_TIER, ETS_TIER, NAIVE_TIER)
ANOMALY_ETS_TIER = Tier("ETS(A,N,A,7)", ETS_MIN_DAYS)
ANOMALY_TIERS = (ANOMALY_ETS_TIER, NAIVE_TIER)


def tier_for(days: int, tiers: tuple[Tier, ...]) -> Tier | None:
    for tier in tiers:
        if days >= tier.min_days:
            return tier
    return None


def model_of(tier: Tier) -> Any:
    """The statsforecast model of a tier, aliased `model` (one output column name for all)."""
    from statsforecast.models import MSTL, AutoETS, SeasonalNaive

    if tier is MSTL_TIER:
        return MSTL(
            season_length=[WEEK, YEAR],
            # The deseasonalised series' level by AutoETS without a trend term: on the benchmark's
            # trending series AutoETS chose no trend anyway (same sMAPE), at half the fitting time.
            trend_forecaster=AutoETS(model="ZNN"),
            stl_kwargs=STL_JUMPS,
            alias="model",
        )
    if tier is ETS_TIER:
        return AutoETS(season_length=WEEK, alias="model")
    if tier is ANOMALY_ETS_TIER:
        return AutoETS(season_length=WEEK, model="ANA", alias="model")
    return SeasonalNaive(season_length=WEEK, alias="model")


def long_frame(ids: list[str], starts: list[Any], values: list[Any]) -> pd.DataFrame:
    """statsforecast's input: unique_id, ds (daily), y."""
    import numpy as np
    import pandas as pd

    frames = [
        pd.DataFrame(
            {
                "unique_id": key,
                "ds": pd.date_range(start, periods=len(ys), freq="D"),
                "y": np.asarray(ys, dtype=np.float64),
            }
        )
        for key, start, ys in zip(ids, starts, values, strict=True)
    ]
    return pd.concat(frames, ignore_index=True)


def forecast_frame(frame: pd.DataFrame, tier: Tier, horizon: int, n_jobs: int = 1) -> pd.DataFrame:
    """unique_id, ds, model, model-lo-80 … model-hi-95 for `horizon` days after each series."""
    from statsforecast import StatsForecast

    forecaster = StatsForecast(models=[model_of(tier)], freq="D", n_jobs=n_jobs)
    return cast("pd.DataFrame", forecaster.forecast(df=frame, h=horizon, level=FORECAST_LEVELS))


def fitted(tier: Tier, history: np.ndarray) -> Any:
    """The tier's model with its parameters fitted on `history`; its `forward(y, h, level)`
    then forecasts after a longer `y` with those parameters (the state follows `y`)."""
    return model_of(tier).fit(history)
