"""ML benchmark: anomaly flags, forecast error and fitting speed of lib/ml (no database needed).

    python -m bench.ml_bench            # 60 series for the flags, 1,000 series for the speed
    python -m bench.ml_bench --quick    # 12 and 100

1. Anomaly flags: generated daily series (two years: trend, weekly and yearly seasonality,
   Gaussian noise) with injected spikes, dips, level shifts and dropouts in the second year.
   Every day of the second year is judged by `lib.ml.anomalies.judge_series` (each day against
   a model fitted on the days before it) at the `low` sensitivity (99.9 % interval). An event
   is found when a flag falls in its window (the day of a spike or dip, the days of a dropout,
   the first 7 days of a level shift); precision = flags inside event windows / all flags,
   recall = events found / events. Goal: both >= 0.8.
2. Forecast error: Seattle's daily mean temperature 2012-2015 ((maximum + minimum) / 2 of the
   `seattle-weather` data set that vega_datasets ships; the maximum alone is shown too), 28
   days ahead from 12 origins 28 days apart in 2015, each fitted on every day before it; sMAPE
   of `lib.ml.forecast.forecast_series` against statsforecast's SeasonalNaive(7). Goal: >= 10 %
   lower.
3. Speed: fit + forecast (28 days, 80/95 % intervals) of 1,000 generated series x 730 days by
   `forecast_series` on 2 processes. Goal: <= 60 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from analytics_pipelines.lib.ml.anomalies import judge_series
from analytics_pipelines.lib.ml.forecast import forecast_series
from analytics_pipelines.lib.ml.series import Series

FIRST_DAY = dt.date(2024, 1, 1)
DAYS = 730
JUDGED_FROM = 365  # the second year is judged
LEVEL = 99.9  # `low` sensitivity
SHIFT_WINDOW = 7
HORIZON = 28
ORIGINS = 12
PRECISION_GOAL = RECALL_GOAL = 0.8
SMAPE_GOAL = 0.10
SPEED_GOAL_SECONDS = 60.0


@dataclass(frozen=True)
class Event:
    kind: str
    start: int  # index of the first day
    days: int  # length of its window


def generated(rng: np.random.Generator, days: int = DAYS) -> tuple[np.ndarray, float]:
    """A business-like day series and its noise level."""
    t = np.arange(days)
    level = rng.uniform(200, 2000)
    noise = level * rng.uniform(0.02, 0.05)
    weekly = np.array([1.0, 1.05, 1.02, 1.0, 1.15, 0.8, 0.65])[(t + rng.integers(7)) % 7]
    yearly = 1 + 0.15 * np.sin(2 * np.pi * (t + rng.integers(365)) / 365.25)
    trend = 1 + rng.uniform(-0.1, 0.3) * t / days
    return level * weekly * yearly * trend + rng.normal(0, noise, days), noise


def inject(rng: np.random.Generator, values: np.ndarray, noise: float) -> list[Event]:
    """Two spikes, two dips, a level shift and a two-day dropout in the judged year, apart."""
    kinds = ["spike", "spike", "dip", "dip", "shift", "dropout"]
    rng.shuffle(kinds)
    slots = np.sort(rng.choice(np.arange(JUDGED_FROM + 14, DAYS - 40, 40), len(kinds), False))
    events = []
    for kind, start in zip(kinds, slots, strict=True):
        size = rng.uniform(4, 8) * noise
        if kind == "spike":
            values[start] += size
            events.append(Event(kind, int(start), 1))
        elif kind == "dip":
            values[start] -= size
            events.append(Event(kind, int(start), 1))
        elif kind == "shift":
            values[start:] += size
            events.append(Event(kind, int(start), SHIFT_WINDOW))
        else:
            values[start : start + 2] = 0.0
            events.append(Event(kind, int(start), 2))
    return events


@dataclass(frozen=True)
class FlagScore:
    series: int
    events: int
    found: int
    flags: int
    flags_in_events: int
    seconds: float

    @property
    def precision(self) -> float:
        return self.flags_in_events / self.flags if self.flags else 0.0

    @property
    def recall(self) -> float:
        return self.found / self.events if self.events else 0.0


def score_flags(count: int, seed: int = 17) -> FlagScore:
    rng = np.random.default_rng(seed)
    events_total = found = flags = inside = 0
    started = time.perf_counter()
    for i in range(count):
        values, noise = generated(rng)
        events = inject(rng, values, noise)
        verdicts = judge_series(Series(f"s{i}", FIRST_DAY, values), JUDGED_FROM, LEVEL)
        flagged = {
            (day - FIRST_DAY).days for day in verdicts.loc[verdicts["anomalous"], "period_date"]
        }
        windows = [set(range(e.start, e.start + e.days)) for e in events]
        events_total += len(events)
        found += sum(1 for w in windows if w & flagged)
        flags += len(flagged)
        inside += len(flagged & set().union(*windows))
    return FlagScore(count, events_total, found, flags, inside, time.perf_counter() - started)


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.mean(2 * np.abs(actual - forecast) / (np.abs(actual) + np.abs(forecast))))


def score_forecast(column: str) -> tuple[float, float, str]:
    """(sMAPE of lib/ml, sMAPE of seasonal naive, model used) on a Seattle weather series:
    `mean` is the daily mean temperature, (maximum + minimum) / 2."""
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast.models import SeasonalNaive
    from vega_datasets import local_data

    weather = local_data.seattle_weather()
    if column == "mean":
        values = ((weather["temp_max"] + weather["temp_min"]) / 2).to_numpy(dtype=np.float64)
    else:
        values = weather[column].to_numpy(dtype=np.float64)
    first = weather["date"].iloc[0].date()
    ours: list[float] = []
    naive: list[float] = []
    models: set[str] = set()
    for k in range(ORIGINS):
        origin = len(values) - HORIZON * (ORIGINS - k)
        history, actual = values[:origin], values[origin : origin + HORIZON]
        predicted = forecast_series([Series("seattle", first, history)], HORIZON)
        models.update(predicted["model"])
        ours.append(smape(actual, predicted["mean"].to_numpy()))
        frame = pd.DataFrame(
            {
                "unique_id": "seattle",
                "ds": pd.date_range(first, periods=origin, freq="D"),
                "y": history,
            }
        )
        baseline = StatsForecast(models=[SeasonalNaive(7)], freq="D").forecast(df=frame, h=HORIZON)
        naive.append(smape(actual, baseline["SeasonalNaive"].to_numpy()))
    return float(np.mean(ours)), float(np.mean(naive)), ", ".join(sorted(models))


def time_forecasts(count: int, seed: int = 3) -> tuple[float, str]:
    rng = np.random.default_rng(seed)
    series = [Series(f"s{i}", FIRST_DAY, generated(rng)[0]) for i in range(count)]
    started = time.perf_counter()
    predicted = forecast_series(series, HORIZON, n_jobs=2)
    seconds = time.perf_counter() - started
    assert len(predicted) == count * HORIZON
    return seconds, ", ".join(sorted(set(predicted["model"])))


def load_average() -> str:
    """The machine's 1-minute load: the speed row is only as good as the machine was idle."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ml_bench")
    parser.add_argument("--quick", action="store_true", help="fewer series")
    args = parser.parse_args(argv)
    flag_series, speed_series = (12, 100) if args.quick else (60, 1000)

    sys.stderr.write(f"ml bench: judging {flag_series} series x {DAYS} days …\n")
    flags = score_flags(flag_series)
    sys.stderr.write("ml bench: forecasting Seattle's daily temperatures …\n")
    ours, naive, model = score_forecast("mean")
    ours_max, naive_max, _ = score_forecast("temp_max")
    sys.stderr.write(f"ml bench: fitting and forecasting {speed_series} series …\n")
    load_before = load_average()
    seconds, speed_models = time_forecasts(speed_series)
    # The goal is stated for 1,000 series; a quick run is scaled to it.
    projected = seconds * 1000 / speed_series
    gain = 1 - ours / naive
    gain_max = 1 - ours_max / naive_max

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    rows = [
        (
            f"anomaly flags, precision ({flags.series} series, {flags.events} events, "
            f"{flags.flags} flags, {LEVEL:g} % interval)",
            f"{flags.precision:.3f}",
            f">= {PRECISION_GOAL}",
            verdict(flags.precision >= PRECISION_GOAL),
        ),
        (
            f"anomaly flags, recall ({flags.found} of {flags.events} events found; "
            f"{flags.seconds:.1f} s to judge {flags.series * (DAYS - JUDGED_FROM)} days)",
            f"{flags.recall:.3f}",
            f">= {RECALL_GOAL}",
            verdict(flags.recall >= RECALL_GOAL),
        ),
        (
            f"forecast sMAPE, Seattle daily mean temperature, {HORIZON} days x {ORIGINS} "
            f"origins: {model} vs SeasonalNaive(7)",
            f"{ours:.4f} vs {naive:.4f} ({gain:.1%} lower)",
            f">= {SMAPE_GOAL:.0%} lower",
            verdict(gain >= SMAPE_GOAL),
        ),
        (
            "the same, daily maximum temperature alone (for reference: noisier from day to day)",
            f"{ours_max:.4f} vs {naive_max:.4f} ({gain_max:.1%} lower)",
            "",
            "",
        ),
        (
            f"fit + forecast {speed_series} series x {DAYS} days, 2 processes ({speed_models}; "
            f"load average {load_before} before, {load_average()} after)",
            f"{seconds:.1f} s"
            + (f" (x{1000 // speed_series}: {projected:.0f} s)" if speed_series != 1000 else ""),
            f"<= {SPEED_GOAL_SECONDS:.0f} s for 1,000",
            verdict(projected <= SPEED_GOAL_SECONDS),
        ),
    ]
    out = ["| measure | result | goal | |", "| --- | ---: | --- | --- |"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
