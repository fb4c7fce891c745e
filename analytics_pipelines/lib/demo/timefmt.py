"""Fast, vectorised text rendering of event instants (strftime per row is the bottleneck at scale)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

# Zone offsets change on quarter-hour boundaries at the finest, so a 15-minute grid is exact.
_GRID_SECONDS = 900
_EPOCH_DAY = date(1970, 1, 1)


@lru_cache(maxsize=1)
def _clock_table() -> pl.Series:
    """ "HH:MM:SS" for every second of a day: formatting becomes one gather."""
    seconds = pl.Series(np.arange(86_400, dtype=np.int64))
    parts = [
        (seconds // 3600).cast(pl.String).str.zfill(2),
        ((seconds // 60) % 60).cast(pl.String).str.zfill(2),
        (seconds % 60).cast(pl.String).str.zfill(2),
    ]
    return pl.select(pl.concat_str(parts, separator=":")).to_series()


def utc_offsets(epoch_s: np.ndarray, timezone: str) -> np.ndarray:
    """UTC offset in seconds of `timezone` at each instant (daylight saving included)."""
    if epoch_s.size == 0:
        return np.zeros(0, dtype=np.int64)
    low = int(epoch_s.min()) // _GRID_SECONDS * _GRID_SECONDS
    high = int(epoch_s.max())
    zone = ZoneInfo(timezone)
    grid = range(low, high + _GRID_SECONDS, _GRID_SECONDS)
    table = np.array(
        [
            int(datetime.fromtimestamp(point, zone).utcoffset().total_seconds())  # type: ignore[union-attr]
            for point in grid
        ],
        dtype=np.int64,
    )
    return table[(epoch_s - low) // _GRID_SECONDS]


def _dates(days: np.ndarray) -> pl.Series:
    """ "YYYY-MM-DD" for days since the epoch, formatted once per distinct day."""
    first = int(days.min()) if days.size else 0
    last = int(days.max()) if days.size else 0
    table = pl.Series(
        [(_EPOCH_DAY + timedelta(days=d)).isoformat() for d in range(first, last + 1)],
        dtype=pl.String,
    )
    return table.gather(pl.Series(days - first))


def _offset_text(offsets: np.ndarray) -> pl.Series:
    value = pl.Series(offsets)
    magnitude = value.abs()
    return pl.select(
        pl.concat_str(
            [
                pl.when(value < 0).then(pl.lit("-")).otherwise(pl.lit("+")),
                (magnitude // 3600).cast(pl.String).str.zfill(2),
                pl.lit(":"),
                ((magnitude // 60) % 60).cast(pl.String).str.zfill(2),
            ]
        )
    ).to_series()


def render_instants(epoch_s: np.ndarray, timezone: str, style: str) -> pl.Series:
    """Render UTC epoch seconds as text.

    `naive`: local wall clock `2026-01-05 14:03:00`; `offset`: `2026-01-05T14:03:00+01:00`;
    `zulu`: UTC `2026-01-05T13:03:00Z`.
    """
    epoch_s = np.asarray(epoch_s, dtype=np.int64)
    offsets = np.zeros_like(epoch_s) if style == "zulu" else utc_offsets(epoch_s, timezone)
    local = epoch_s + offsets
    days, second_of_day = np.divmod(local, 86_400)
    day_text = _dates(days)
    clock = _clock_table().gather(pl.Series(second_of_day))
    if style == "naive":
        parts = [day_text, pl.lit(" "), clock]
    elif style == "offset":
        parts = [day_text, pl.lit("T"), clock, _offset_text(offsets)]
    elif style == "zulu":
        parts = [day_text, pl.lit("T"), clock, pl.lit("Z")]
    else:
        raise ValueError(f"unknown timestamp style {style!r}")
    return pl.select(pl.concat_str(parts)).to_series()


def local_midnight_epoch(day: date, timezone: str, extra_seconds: int = 0) -> int:
    """UTC epoch seconds of local wall-clock `day 00:00 + extra_seconds` in `timezone`."""
    wall = datetime(day.year, day.month, day.day) + timedelta(seconds=extra_seconds)
    return int(wall.replace(tzinfo=ZoneInfo(timezone)).astimezone(UTC).timestamp())
