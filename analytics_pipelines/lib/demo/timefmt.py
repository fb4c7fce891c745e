"""Vectorised text rendering of event instants: polars converts zones and formats in Rust."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

_FORMATS = {
    "naive": "%Y-%m-%d %H:%M:%S",
    "offset": "%Y-%m-%dT%H:%M:%S%:z",
    "zulu": "%Y-%m-%dT%H:%M:%SZ",
}


def _instants(epoch_s: np.ndarray, timezone: str) -> pl.Series:
    utc = pl.from_epoch(pl.Series(np.asarray(epoch_s, dtype=np.int64)), time_unit="s")
    return utc.dt.replace_time_zone("UTC").dt.convert_time_zone(timezone)


def utc_offsets(epoch_s: np.ndarray, timezone: str) -> np.ndarray:
    """UTC offset in seconds of `timezone` at each instant (daylight saving included)."""
    local = _instants(epoch_s, timezone)
    offset = local.dt.base_utc_offset() + local.dt.dst_offset()
    return offset.dt.total_seconds().cast(pl.Int64).to_numpy()


def render_instants(epoch_s: np.ndarray, timezone: str, style: str) -> pl.Series:
    """Render UTC epoch seconds as text.

    `naive`: local wall clock `2026-01-05 14:03:00`; `offset`: `2026-01-05T14:03:00+01:00`;
    `zulu`: UTC `2026-01-05T13:03:00Z`.
    """
    if style not in _FORMATS:
        raise ValueError(f"unknown timestamp style {style!r}")
    instants = _instants(epoch_s, "UTC" if style == "zulu" else timezone)
    return instants.dt.strftime(_FORMATS[style])


def local_midnight_epoch(day: date, timezone: str, extra_seconds: int = 0) -> int:
    """UTC epoch seconds of local wall-clock `day 00:00 + extra_seconds` in `timezone`."""
    wall = datetime(day.year, day.month, day.day) + timedelta(seconds=extra_seconds)
    return int(wall.replace(tzinfo=ZoneInfo(timezone)).astimezone(UTC).timestamp())
