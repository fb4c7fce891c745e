"""Judge each day value of a KPI against a model fitted only on the days before it.

For every series, the days to judge start at the first day whose stored value has no verdict
yet, or differs from the value its verdict judged (a correction or late data recomputed it), or
lost its value; from there to the last complete day everything is judged again, because the
later days' models saw the changed value. Days earlier than that keep their verdicts, and
nothing after a day ever enters its verdict (lib/ml/models.py `one_step_frame`): changing a
future value cannot change a past verdict.

A value outside the declared prediction interval (`anomalies.sensitivity` or `level`) is
anomalous: `direction` above or below, `deviation` value - expected, `score` the deviation in
half-widths of the interval (NULL for an interval of no width).

Judging does not hold the KPI's refresh lock: fitting a year of models per series takes tens
of seconds, and a KPI refresh waiting for it would keep a delivery's new numbers from the
warehouse. A refresh may therefore change a value while it is judged; each verdict is stored
only if the value is still the one the model judged, so a changed cell has no verdict and is
judged (with the days after it) on the next run. One judge runs per KPI at a time.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg2 import sql

from analytics_pipelines.lib.catalog import KpiSpec
from analytics_pipelines.lib.ml.models import (
    ANOMALY_TIERS,
    NEW_LEVEL_AFTER_DAYS,
    REFIT_EVERY_DAYS,
    fitted,
    tier_for,
)
from analytics_pipelines.lib.ml.series import (
    MIN_HISTORY_DAYS,
    Series,
    classify,
    read_day_frame,
    split_series,
)
from analytics_pipelines.lib.pg import DbApiConnection, fetch_all

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

VERDICT_COLUMNS = [
    "dimensions",
    "period_date",
    "expected",
    "lo",
    "hi",
    "anomalous",
    "direction",
    "deviation",
    "score",
    "model",
    "history_days",
]

# The value a verdict judged, as the model read it (float8): staged beside VERDICT_COLUMNS.
JUDGED_VALUE = "judged_value"

# Verdicts cover the last year of complete days: a first run over a long history judges a year
# per series (~0.3 s each), not all of it; older days keep whatever verdicts they had.
MAX_JUDGED_DAYS = 366

# Per series, the first day (with at least MIN_HISTORY_DAYS before it, within MAX_JUDGED_DAYS)
# whose verdict is missing
# or stale: its value has no verdict, or not the value judged, or a verdict lost its value.
_FIRST_STALE = """
WITH cells AS (
    SELECT v.dimensions, CAST(timezone(%(tz)s, v.period_start) AS date) AS day, v.value,
           min(CAST(timezone(%(tz)s, v.period_start) AS date))
               FILTER (WHERE v.value IS NOT NULL) OVER (PARTITION BY v.dimensions) AS first_day
    FROM kpi.kpi_values AS v
    WHERE v.kpi = %(kpi)s AND v.grain = 'day'
      AND v.period_start < timezone(%(tz)s, CAST(%(before)s AS timestamp))
)
SELECT s.series, min(s.day) AS day FROM (
    SELECT c.dimensions::text AS series, c.day
    FROM cells AS c
    LEFT JOIN kpi.anomaly_verdicts AS a
      ON a.kpi = %(kpi)s AND a.dimensions = c.dimensions AND a.period_date = c.day
    WHERE c.value IS NOT NULL AND c.day >= c.first_day + %(min_days)s
      AND c.day >= CAST(%(before)s AS date) - %(max_days)s
      AND (a.kpi IS NULL OR a.value IS DISTINCT FROM c.value)
    UNION ALL
    SELECT a.dimensions::text, a.period_date
    FROM kpi.anomaly_verdicts AS a
    LEFT JOIN cells AS c ON c.dimensions = a.dimensions AND c.day = a.period_date
    WHERE a.kpi = %(kpi)s AND c.value IS NULL
) AS s
GROUP BY s.series
"""


@dataclass(frozen=True)
class JudgeResult:
    kpi: str
    judged: int = 0  # cells judged in this run
    anomalous: int = 0  # of them
    series: int = 0  # series with cells judged
    skipped: dict[str, str] = field(default_factory=dict)  # series key -> why not judged


def judge_series(
    one: Series, first_index: int, level: float, outliers: Mapping[int, float] | None = None
) -> pd.DataFrame:
    """Verdicts (VERDICT_COLUMNS) for the observed days of `one` from index `first_index` on,
    each from a model that saw only the days before it.

    Day by day: the model's parameters are fitted on the history before the first judged day
    and again every REFIT_EVERY_DAYS, its state follows every day. The history it sees is
    cleaned as it goes: an anomalous day is replaced by what was expected, so a spike or a
    dropout does not drag the next days' expectations and make them look anomalous too.
    NEW_LEVEL_AFTER_DAYS anomalous days in a row in the same direction are a new level, not an
    outlier: they are put back, and the model follows them. Both use only days before the day
    judged. `outliers` (day index -> expected value) are earlier days found anomalous by an
    earlier run, cleaned the same way.
    """
    import numpy as np
    import pandas as pd

    start = max(first_index, MIN_HISTORY_DAYS)
    values = one.values
    history = one.carried()
    for index, value in (outliers or {}).items():
        if 0 <= index < start:
            history[index] = value
    expected = np.full(len(values), np.nan)
    lo, hi, models = expected.copy(), expected.copy(), np.full(len(values), "", dtype=object)
    model: object = None
    tier = None
    run: list[int] = []  # the current run of anomalous days in one direction
    for t in range(start, len(values)):
        wanted = tier_for(t, ANOMALY_TIERS)
        if model is None or wanted is not tier or (t - start) % REFIT_EVERY_DAYS == 0:
            tier, model = wanted, fitted(wanted, history[:t])  # type: ignore[arg-type]
        step = model.forward(y=history[:t], h=1, level=[level])  # type: ignore[attr-defined]
        expected[t] = step["mean"][0]
        lo[t] = next(v for k, v in step.items() if k.startswith("lo-"))[0]
        hi[t] = next(v for k, v in step.items() if k.startswith("hi-"))[0]
        models[t] = tier.name  # type: ignore[union-attr]
        if np.isnan(values[t]) or lo[t] <= values[t] <= hi[t]:
            run = []
            continue
        if run and (values[run[-1]] > hi[run[-1]]) != (values[t] > hi[t]):
            run = []
        run.append(t)
        if len(run) >= NEW_LEVEL_AFTER_DAYS:
            history[run] = values[run]
        else:
            history[t] = expected[t]
    judged = np.arange(start, len(values))
    if not len(judged):
        return pd.DataFrame(columns=[*VERDICT_COLUMNS, JUDGED_VALUE])
    return _verdicts(one, judged, expected[judged], lo[judged], hi[judged], models[judged])


def _verdicts(
    one: Series,
    offsets: np.ndarray,
    expected: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    models: np.ndarray,
) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    value = one.values[offsets]
    observed = ~np.isnan(value)
    lo = np.minimum(low, expected)
    hi = np.maximum(high, expected)
    deviation = value - expected
    half = (hi - lo) / 2
    # No score where the interval has no width (a constant history; float noise aside): any
    # change leaves it, and a ratio to a rounding error would say nothing.
    width = half > 1e-9 * np.maximum(1.0, np.abs(expected))
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(width, deviation / half, np.nan)
    above, below = value > hi, value < lo
    frame = pd.DataFrame(
        {
            "dimensions": one.key,
            "period_date": [one.day(int(i)) for i in offsets],
            "expected": expected,
            "lo": lo,
            "hi": hi,
            "anomalous": above | below,
            "direction": pd.Series(np.where(above, "above", "below")).where(above | below),
            "deviation": deviation,
            "score": score,
            "model": models,
            # Observed days before each judged day.
            "history_days": np.cumsum(~np.isnan(one.values))[offsets] - 1,
            JUDGED_VALUE: value,
        }
    )
    return frame[observed].reset_index(drop=True)


def judge_kpi(conn: DbApiConnection, kpi: KpiSpec, today: dt.date) -> JudgeResult:
    """Judge the new and changed day cells of `kpi` before `today` (local) and store the
    verdicts, in the caller's transaction."""
    import pandas as pd

    spec = kpi.anomalies
    if spec is None:
        raise ValueError(f"kpi {kpi.name} declares no anomalies")
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%(key)s))", {"key": f"ml-anomalies:{kpi.name}"}
        )
    stale = {
        row.series: row.day
        for row in fetch_all(
            conn,
            _FIRST_STALE,
            {
                "kpi": kpi.name,
                "tz": kpi.timezone,
                "before": today,
                "min_days": MIN_HISTORY_DAYS,
                "max_days": MAX_JUDGED_DAYS,
            },
        )
    }
    if not stale:
        return JudgeResult(kpi.name)
    found = classify(split_series(read_day_frame(conn, kpi, today)))
    skipped = {key: why for key, why in found.skipped.items() if key in stale}
    parts = []
    starts: dict[str, dt.date] = {}
    earlier = _earlier_outliers(conn, kpi)
    for one in found.usable:
        if one.key not in stale:
            continue
        starts[one.key] = stale[one.key]
        first_index = max((stale[one.key] - one.first_day).days, 0)
        outliers = {
            (day - one.first_day).days: expected for day, expected in earlier.get(one.key, [])
        }
        parts.append(judge_series(one, first_index, spec.interval_level, outliers))
    verdicts = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    # Skipped series lose their stale verdicts too, and so do series without any value now (a
    # dimension value that is gone): none of those verdicts holds for today's values.
    modelled = {one.key for one in found.usable}
    starts.update({key: day for key, day in stale.items() if key not in modelled})
    _store(conn, kpi, verdicts, starts, spec.interval_level)
    return JudgeResult(
        kpi.name,
        judged=len(verdicts),
        anomalous=int(verdicts["anomalous"].sum()) if len(verdicts) else 0,
        series=len(parts),
        skipped=skipped,
    )


def _earlier_outliers(
    conn: DbApiConnection, kpi: KpiSpec
) -> dict[str, list[tuple[dt.date, float]]]:
    """Stored anomalous days per series that a later run cleans from its history as the run
    that found them did: (day, expected), runs of NEW_LEVEL_AFTER_DAYS or more days in one
    direction left out (a new level, which the model follows)."""
    rows = fetch_all(
        conn,
        "SELECT dimensions::text AS series, period_date, expected, direction "
        "FROM kpi.anomaly_verdicts WHERE kpi = %(kpi)s AND anomalous "
        "ORDER BY dimensions::text, period_date",
        {"kpi": kpi.name},
    )
    found: dict[str, list[tuple[dt.date, float]]] = {}
    run: list[Any] = []

    def close() -> None:
        if run and len(run) < NEW_LEVEL_AFTER_DAYS:
            found.setdefault(run[0].series, []).extend((r.period_date, r.expected) for r in run)

    for row in rows:
        last = run[-1] if run else None
        consecutive = (
            last is not None
            and last.series == row.series
            and last.direction == row.direction
            and (row.period_date - last.period_date).days == 1
        )
        if not consecutive:
            close()
            run = []
        run.append(row)
    close()
    return found


def _store(
    conn: DbApiConnection,
    kpi: KpiSpec,
    verdicts: pd.DataFrame,
    starts: dict[str, dt.date],
    level: float,
) -> None:
    """Replace the verdicts of each series from its start day on; an anomalous cell that stays
    anomalous in the same direction keeps its `alerted_at` (it is alerted once)."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in VERDICT_COLUMNS)
    names = [*VERDICT_COLUMNS, JUDGED_VALUE]
    staged_columns = sql.SQL(", ").join(sql.Identifier(c) for c in names)
    with conn.cursor() as cursor:
        cursor.execute(
            sql.SQL(
                "CREATE TEMP TABLE ml_verdict_stage ON COMMIT DROP AS "
                "SELECT {}, CAST(NULL AS float8) AS {} FROM kpi.anomaly_verdicts WITH NO DATA"
            ).format(columns, sql.Identifier(JUDGED_VALUE))
        )
        if len(verdicts):
            buffer = io.StringIO()
            verdicts[names].to_csv(
                buffer, index=False, header=False, date_format="%Y-%m-%d", float_format="%.17g"
            )
            buffer.seek(0)
            cursor.copy_expert(
                sql.SQL("COPY ml_verdict_stage ({}) FROM STDIN WITH (FORMAT csv)").format(
                    staged_columns
                ),
                buffer,
            )
        params = {
            "kpi": kpi.name,
            "tz": kpi.timezone,
            "level": level,
            "keys": list(starts),
            "starts": list(starts.values()),
        }
        # The old verdicts of the re-judged ranges, kept aside for their alert marks.
        cursor.execute(
            "CREATE TEMP TABLE ml_verdict_old ON COMMIT DROP AS "
            "SELECT a.dimensions, a.period_date, a.direction, a.alerted_at "
            "FROM kpi.anomaly_verdicts AS a "
            "JOIN unnest(CAST(%(keys)s AS jsonb[]), CAST(%(starts)s AS date[])) AS r(key, start) "
            "  ON a.dimensions = r.key AND a.period_date >= r.start "
            "WHERE a.kpi = %(kpi)s",
            params,
        )
        cursor.execute(
            "DELETE FROM kpi.anomaly_verdicts AS a "
            "USING unnest(CAST(%(keys)s AS jsonb[]), CAST(%(starts)s AS date[])) AS r(key, start) "
            "WHERE a.kpi = %(kpi)s AND a.dimensions = r.key AND a.period_date >= r.start",
            params,
        )
        cursor.execute(
            sql.SQL(
                "INSERT INTO kpi.anomaly_verdicts ({columns}, kpi, period_start, value, level, "
                "alerted_at) "
                "SELECT {staged}, %(kpi)s, v.period_start, v.value, %(level)s, "
                "  CASE WHEN s.anomalous AND o.direction = s.direction THEN o.alerted_at END "
                "FROM ml_verdict_stage AS s "
                "JOIN kpi.kpi_values AS v ON v.kpi = %(kpi)s AND v.grain = 'day' "
                "  AND v.dimensions = s.dimensions "
                "  AND v.period_start = timezone(%(tz)s, CAST(s.period_date AS timestamp)) "
                "LEFT JOIN ml_verdict_old AS o "
                "  ON o.dimensions = s.dimensions AND o.period_date = s.period_date "
                # A value a refresh changed since it was read keeps no verdict: judged again.
                "WHERE v.value IS NOT NULL AND CAST(v.value AS float8) = s.{judged}"
            ).format(
                columns=columns,
                staged=sql.SQL(", ").join(sql.Identifier("s", c) for c in VERDICT_COLUMNS),
                judged=sql.Identifier(JUDGED_VALUE),
            ),
            params,
        )
        cursor.execute("DROP TABLE ml_verdict_stage, ml_verdict_old")
