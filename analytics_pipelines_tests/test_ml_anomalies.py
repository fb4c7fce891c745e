"""Anomaly verdicts: a value is judged only against the days before it, a spike is flagged with
its direction, a correction re-judges the day, and short, constant or zero series are reported
instead of crashing the run."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from analytics_pipelines.lib.ml.anomalies import MAX_JUDGED_DAYS, judge_kpi, judge_series
from analytics_pipelines.lib.ml.series import Series
from analytics_pipelines.lib.warehouse import Warehouse, dbapi_connection
from analytics_pipelines_tests.test_ml_support import FIRST_DAY, TODAY, MlKpi, weekly_values

DAYS = 70
SPIKE = 60  # index of the injected spike


def _judge(kpi: MlKpi) -> object:
    with kpi.warehouse.begin() as conn:
        return judge_kpi(dbapi_connection(conn), kpi.kpi, TODAY)


def test_future_values_never_change_a_past_verdict() -> None:
    base = weekly_values(DAYS)
    changed = base.copy()
    changed[50:] = changed[50:] * 3  # everything from day 50 on is different
    first = judge_series(Series("{}", FIRST_DAY, base), 20, 99.0)
    second = judge_series(Series("{}", FIRST_DAY, changed), 20, 99.0)
    before = first[first["period_date"] < FIRST_DAY + dt.timedelta(days=50)]
    again = second[second["period_date"] < FIRST_DAY + dt.timedelta(days=50)]
    assert len(before) == 30
    assert before.reset_index(drop=True).equals(again.reset_index(drop=True))
    # ... while the changed days themselves are judged on what they are now.
    assert second.loc[second["period_date"] == FIRST_DAY + dt.timedelta(days=50), "anomalous"].all()


def test_spike_flagged_and_a_correction_rejudges_the_day(warehouse: Warehouse) -> None:
    kpi = MlKpi(warehouse)
    values = weekly_values(DAYS)
    values[SPIKE] = values[SPIKE] + 80  # ~40 standard deviations of the noise
    kpi.set_series("north", values)
    result = _judge(kpi)
    spike_day = FIRST_DAY + dt.timedelta(days=SPIKE)
    verdicts = kpi.verdicts()
    # north and the total (which equals north here) from day 14 on; the first 14 days are history.
    assert result.judged == 2 * (DAYS - 14)  # type: ignore[attr-defined]
    assert verdicts[("north", spike_day)][:2] == (True, "above")
    assert verdicts[("total", spike_day)][:2] == (True, "above")
    flagged = sorted(day for (series, day), v in verdicts.items() if v[0] and series == "north")
    assert spike_day in flagged and len(flagged) <= 3, flagged
    untouched = {k: v for k, v in verdicts.items() if k[1] < spike_day}

    # The source corrects the spike day: the refresh recomputes it, the next run re-judges it.
    kpi.set({"north": {spike_day: float(values[SPIKE] - 80)}})
    again = _judge(kpi)
    verdicts = kpi.verdicts()
    assert verdicts[("north", spike_day)][0] is False
    assert verdicts[("north", spike_day)][5] == int(values[SPIKE] - 80)
    # Re-judged: the corrected day and those after it (their models saw it), per series.
    assert again.judged == 2 * (DAYS - SPIKE)  # type: ignore[attr-defined]
    assert {k: v for k, v in verdicts.items() if k[1] < spike_day} == untouched
    # Nothing changed since: nothing to judge.
    assert _judge(kpi).judged == 0  # type: ignore[attr-defined]

    # The last day's row is withdrawn: its cell is gone, so are its verdicts (north and total).
    last = FIRST_DAY + dt.timedelta(days=DAYS - 1)
    kpi.remove("north", last)
    _judge(kpi)
    assert not {k for k in kpi.verdicts() if k[1] == last}
    assert len(kpi.verdicts()) == 2 * (DAYS - 15)


def test_short_constant_zero_and_sparse_series_are_reported(warehouse: Warehouse) -> None:
    kpi = MlKpi(warehouse)
    kpi.set_series("short", weekly_values(10))
    kpi.set_series("constant", np.full(30, 5.0))
    kpi.set_series("zero", np.zeros(30))
    sparse = {FIRST_DAY + dt.timedelta(days=3 * i): 10.0 + i for i in range(20)}
    kpi.set({"sparse": sparse})
    # Constant for four weeks, then one change: judged, against an interval of no width.
    flat = np.full(31, 5.0)
    flat[30] = 9.0
    kpi.set_series("flat", flat)
    result = _judge(kpi)
    skipped = result.skipped  # type: ignore[attr-defined]
    key = '{{"region": "{}"}}'.format
    assert skipped[key("constant")].startswith("constant: 30 day(s) of 5")
    assert skipped[key("zero")].startswith("all zero")
    assert skipped[key("sparse")].startswith("sparse: 38 of 58 days")
    # `short` has no day with 14 days of history before it: nothing to judge, nothing stale.
    assert key("short") not in skipped
    # The total adds them up: a real series, judged; so is `flat`, whose last day is flagged.
    verdicts = kpi.verdicts()
    assert {s for (s, _), _v in verdicts.items()} == {"total", "flat"}
    flagged = {(s, d) for (s, d), v in verdicts.items() if s == "flat" and v[0]}
    assert flagged == {("flat", FIRST_DAY + dt.timedelta(days=30))}
    with warehouse.connect() as conn:
        score = conn.execute(
            sa.text(
                "SELECT score, deviation, direction FROM kpi.anomaly_verdicts WHERE kpi = :kpi "
                "AND dimensions ->> 'region' = 'flat' AND anomalous"
            ),
            {"kpi": kpi.kpi.name},
        ).one()
    assert score.score is None and score.deviation == 4.0 and score.direction == "above"


def test_verdicts_cover_the_last_year_of_complete_days(warehouse: Warehouse) -> None:
    kpi = MlKpi(warehouse)
    kpi.set_series("north", weekly_values(60))
    # A year and 30 days after the last value: only its last 30 days are within the year.
    today = FIRST_DAY + dt.timedelta(days=60 + MAX_JUDGED_DAYS - 30)
    with warehouse.begin() as conn:
        result = judge_kpi(dbapi_connection(conn), kpi.kpi, today)
    assert result.judged == 2 * 30
    first = min(day for _series, day in kpi.verdicts())
    assert first == today - dt.timedelta(days=MAX_JUDGED_DAYS)


def test_a_later_run_keeps_an_earlier_outlier_out_of_the_history(warehouse: Warehouse) -> None:
    kpi = MlKpi(warehouse)
    values = weekly_values(DAYS)
    values[50] += 300  # a huge spike, judged by the first run
    values[60] += 25  # a smaller one (~12 noise deviations), judged by the second run
    kpi.set_series("north", values[:51])
    _judge(kpi)
    kpi.set_series("north", values[51:], first=FIRST_DAY + dt.timedelta(days=51))
    _judge(kpi)
    flagged = sorted(d for (s, d), v in kpi.verdicts().items() if s == "north" and v[0])
    # The second run refits on a history where the first spike is what was expected; with the
    # spike in it, the interval would be ±115 wide and the second spike would pass unseen.
    spikes = [FIRST_DAY + dt.timedelta(days=50), FIRST_DAY + dt.timedelta(days=60)]
    assert [d for d in flagged if d >= spikes[0]] == spikes


def test_a_refresh_while_judging_is_not_held_and_its_value_is_judged_next(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    import analytics_pipelines.lib.ml.anomalies as anomalies

    kpi = MlKpi(warehouse)
    values = weekly_values(DAYS)
    kpi.set_series("north", values)
    changed_day = FIRST_DAY + dt.timedelta(days=SPIKE)
    refreshed = threading.Event()

    def refresh_meanwhile() -> None:  # a delivery's KPI refresh, in its own transaction
        kpi.set({"north": {changed_day: float(values[SPIKE] + 500)}})
        refreshed.set()

    real_classify = anomalies.classify

    def classify_while_a_refresh_runs(series: Any) -> Any:
        # The values are read; while the models are fitted, a refresh of the KPI commits.
        worker = threading.Thread(target=refresh_meanwhile, daemon=True)
        worker.start()
        worker.join(timeout=60)
        return real_classify(series)

    monkeypatch.setattr(anomalies, "classify", classify_while_a_refresh_runs)
    _judge(kpi)
    assert refreshed.is_set(), "the KPI refresh waited for the anomaly judge"
    verdicts = kpi.verdicts()
    # The judge saw the old value of that day: it keeps no verdict of a value that is gone ...
    assert ("north", changed_day) not in verdicts
    assert verdicts[("north", changed_day - dt.timedelta(days=1))][0] is False

    monkeypatch.setattr(anomalies, "classify", real_classify)
    again = _judge(kpi)
    # ... and the next run judges the new value, and every day after it, of north and the total.
    assert again.judged == 2 * (DAYS - SPIKE)  # type: ignore[attr-defined]
    verdicts = kpi.verdicts()
    assert verdicts[("north", changed_day)][:2] == (True, "above")
    assert verdicts[("north", changed_day)][5] == int(values[SPIKE] + 500)
