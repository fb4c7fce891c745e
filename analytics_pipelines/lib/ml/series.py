"""A KPI's day values as series (one per `dimensions` value, `{}` the total), and which of them
can be modelled.

Only complete local days count: today's value (the KPI's time zone) grows during the day, and a
half-day judged against a whole-day forecast would be flagged every morning. A day without a
cell (no clean row that day) or with a NULL value is missing: series with too many missing days
are skipped, the others are filled by interpolation for fitting, and missing days are never
judged.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from psycopg2 import sql

from analytics_pipelines.lib.catalog import KpiSpec
from analytics_pipelines.lib.pg import DbApiConnection

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# Fewer observed days than this: no model says anything useful (two weeks: two weekly cycles).
MIN_HISTORY_DAYS = 14
# More missing days than this share of the span between the first and last observation.
MAX_MISSING_SHARE = 0.5

_DAY_VALUES = sql.SQL(
    "COPY (SELECT v.dimensions::text AS series, "
    "CAST(timezone({tz}, v.period_start) AS date) AS day, v.value "
    "FROM kpi.kpi_values AS v WHERE v.kpi = {kpi} AND v.grain = 'day' "
    "AND v.period_start < timezone({tz}, CAST({before} AS timestamp)) "
    "ORDER BY 1, 2) TO STDOUT WITH (FORMAT csv)"
)


@dataclass(frozen=True)
class Series:
    """One series: its dimensions (JSON text as PostgreSQL prints JSONB) and daily values from
    its first to its last observed day, NaN where a day is missing."""

    key: str
    first_day: dt.date
    values: np.ndarray  # float64, one per day from first_day

    @property
    def last_day(self) -> dt.date:
        return self.first_day + dt.timedelta(days=len(self.values) - 1)

    @property
    def observed(self) -> int:
        import numpy as np

        return int(np.count_nonzero(~np.isnan(self.values)))

    def day(self, index: int) -> dt.date:
        return self.first_day + dt.timedelta(days=index)

    def carried(self) -> np.ndarray:
        """Missing days carry the last observed value: what judging a day may use, since an
        interpolation would reach forward to the day being judged."""
        import pandas as pd

        return pd.Series(self.values).ffill().to_numpy(dtype="float64")

    def filled(self) -> np.ndarray:
        """Missing days interpolated linearly between their observed neighbours (for fitting)."""
        import numpy as np

        values = self.values.copy()
        missing = np.isnan(values)
        if missing.any():
            positions = np.arange(len(values))
            values[missing] = np.interp(positions[missing], positions[~missing], values[~missing])
        return values


@dataclass(frozen=True)
class SeriesSet:
    """What can be modelled, and why the rest cannot (series key -> reason)."""

    usable: list[Series] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def series_label(key: str) -> str:
    """`region=north` for `{"region": "north"}`, `total` for `{}`."""
    import json

    dimensions = json.loads(key)
    if not dimensions:
        return "total"
    return ", ".join(f"{name}={dimensions[name]}" for name in sorted(dimensions))


def read_day_frame(conn: DbApiConnection, kpi: KpiSpec, before: dt.date) -> pd.DataFrame:
    """Columns series, day, value of the KPI's day cells before the local day `before`."""
    import pandas as pd

    statement = _DAY_VALUES.format(
        tz=sql.Literal(kpi.timezone), kpi=sql.Literal(kpi.name), before=sql.Literal(before)
    )
    buffer = io.StringIO()
    with conn.cursor() as cursor:
        cursor.copy_expert(statement, buffer)
    buffer.seek(0)
    return pd.read_csv(
        buffer,
        names=["series", "day", "value"],
        dtype={"series": "str", "value": "float64"},
        parse_dates=["day"],
        keep_default_na=False,
        na_values=[""],
        # Parsed as PostgreSQL's float8 cast parses them: a verdict is kept only where the two agree.
        float_precision="round_trip",
    )


def split_series(frame: pd.DataFrame) -> list[Series]:
    """One Series per key, days from its first to its last observed value."""
    import numpy as np

    found = []
    for key, group in frame.groupby("series", sort=True):
        group = group.dropna(subset=["value"])
        if group.empty:
            found.append(Series(str(key), dt.date.min, np.array([], dtype=np.float64)))
            continue
        offsets = (group["day"] - group["day"].iloc[0]).dt.days.to_numpy(dtype=np.int64)
        first = group["day"].iloc[0].date()
        values = np.full(int(offsets[-1]) + 1, np.nan)
        values[offsets] = group["value"].to_numpy(dtype=np.float64)
        found.append(Series(str(key), first, values))
    return found


def classify(series: list[Series], min_days: int = MIN_HISTORY_DAYS) -> SeriesSet:
    """Which series can be modelled; a skipped one says why (never an exception)."""
    import numpy as np

    result = SeriesSet()
    for one in series:
        observed = one.observed
        if observed == 0:
            result.skipped[one.key] = "no values (every day is NULL)"
            continue
        if observed < min_days:
            result.skipped[one.key] = (
                f"short: {observed} day(s) of history, a model needs {min_days}"
            )
            continue
        missing = len(one.values) - observed
        if missing > MAX_MISSING_SHARE * len(one.values):
            result.skipped[one.key] = (
                f"sparse: {missing} of {len(one.values)} days since {one.first_day} have no "
                f"value (at most {MAX_MISSING_SHARE:.0%} may be missing)"
            )
            continue
        present = one.values[~np.isnan(one.values)]
        if np.all(present == 0):
            result.skipped[one.key] = f"all zero: {observed} day(s), nothing to model"
            continue
        if np.all(present == present[0]):
            result.skipped[one.key] = (
                f"constant: {observed} day(s) of {present[0]:g}; no variation to model"
            )
            continue
        result.usable.append(one)
    return result


def read_series(
    conn: DbApiConnection, kpi: KpiSpec, before: dt.date, min_days: int = MIN_HISTORY_DAYS
) -> SeriesSet:
    return classify(split_series(read_day_frame(conn, kpi, before)), min_days)
