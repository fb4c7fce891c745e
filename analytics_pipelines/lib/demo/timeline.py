"""When demo events happen: file time spans and a business-hours shaped event clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from analytics_pipelines.lib.demo.timefmt import local_midnight_epoch, utc_offsets

EPOCH_DAY = date(1970, 1, 1)
# Relative activity per local hour of day: quiet nights, a morning ramp, an evening peak.
HOURLY_ACTIVITY = np.array(
    [2, 1, 1, 1, 1, 2, 4, 7, 10, 12, 13, 13, 12, 12, 12, 12, 12, 12, 13, 14, 13, 10, 7, 4],
    dtype=np.float64,
)


@dataclass(frozen=True)
class FileSpan:
    """One landing file: its index, the local date it starts on and its UTC time window."""

    index: int
    first_day: date
    start_s: int
    end_s: int


def split_days(start: date, days: int, files: int, timezone: str) -> list[FileSpan]:
    """Cut `days` local days from `start` into `files` consecutive windows of equal wall-clock length."""
    if days < 1 or files < 1:
        raise ValueError("days and files must be at least 1")
    total = days * 86_400
    edges = [i * total // files for i in range(files + 1)]
    return [
        FileSpan(
            index=i,
            first_day=start + timedelta(seconds=edges[i]),
            start_s=local_midnight_epoch(start, timezone, edges[i]),
            end_s=local_midnight_epoch(start, timezone, edges[i + 1]),
        )
        for i in range(files)
    ]


class EventClock:
    """Maps quantiles in [0, 1) to instants in a window, busier at local business hours.

    Sorted quantiles give sorted instants, so consecutive chunks of one file stay in time order.
    """

    def __init__(
        self,
        start_s: int,
        end_s: int,
        timezone: str,
        day_activity: Mapping[date, float] | None = None,
    ) -> None:
        if end_s <= start_s:
            raise ValueError("empty time window")
        edges = np.arange(start_s, end_s, 3600, dtype=np.int64)
        edges = np.append(edges, end_s)
        local = edges[:-1] + utc_offsets(edges[:-1], timezone)
        hours = (local // 3600) % 24
        weights = HOURLY_ACTIVITY[hours] * np.diff(edges) / 3600.0
        if day_activity:
            # A busier or quieter local day (weekends, a promotion): its hours weigh more or less.
            days = local // 86_400
            factors = {
                d: day_activity.get(EPOCH_DAY + timedelta(days=int(d)), 1.0) for d in set(days)
            }
            weights = weights * np.array([factors[d] for d in days])
        self.weight = float(weights.sum())
        self._cdf = np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
        self._edges = edges.astype(np.float64)
        self.start_s = start_s
        self.end_s = end_s

    def at(self, quantiles: np.ndarray) -> np.ndarray:
        instants = np.interp(quantiles, self._cdf, self._edges).astype(np.int64)
        return np.minimum(instants, self.end_s - 1)

    def sorted_sample(
        self, rng: np.random.Generator, count: int, low: float, high: float
    ) -> np.ndarray:
        """`count` sorted instants whose quantiles lie in [low, high)."""
        return self.at(np.sort(rng.uniform(low, high, count)))
