"""Vectorised number-to-text rendering through small cached lookup tables.

Gathering from a table of ready strings is several times faster than casting and padding each
value, and formatting is the bulk of the generator's work.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import polars as pl

from analytics_pipelines.lib.demo.errors import DemoError

_SMALL = 100_000


@lru_cache(maxsize=8)
def _digits(width: int) -> pl.Series:
    """Every number below 10**width, zero-padded to `width` digits."""
    return pl.Series(np.arange(10**width, dtype=np.int64)).cast(pl.String).str.zfill(width)


@lru_cache(maxsize=1)
def _plain() -> pl.Series:
    return pl.Series(np.arange(_SMALL, dtype=np.int64)).cast(pl.String)


def _series(values: np.ndarray) -> pl.Series:
    return pl.Series(values.astype(np.int64, copy=False))


def int_text(values: np.ndarray) -> pl.Series:
    """Decimal text of integers (any sign)."""
    if values.size == 0:
        return pl.Series([], dtype=pl.String)
    if int(values.min()) >= 0 and int(values.max()) < _SMALL:
        return _plain().gather(_series(values))
    return _series(values).cast(pl.String)


def padded_ids(prefix: str, numbers: np.ndarray, width: int) -> pl.Series:
    """`prefix` + zero-padded number, e.g. ORD-00001234 (numbers must fit `width` digits)."""
    if numbers.size and (int(numbers.min()) < 0 or int(numbers.max()) >= 10**width):
        raise DemoError(f"identifiers of the form {prefix}{'0' * width} ran out")
    parts: list[pl.Series | pl.Expr] = [pl.lit(prefix)]
    remaining = width
    while remaining > 0:
        group = min(4, remaining)
        remaining -= group
        parts.append(_digits(group).gather(_series((numbers // 10**remaining) % 10**group)))
    return pl.select(pl.concat_str(parts)).to_series().rename("id")


def money(cents: np.ndarray, separator: str = ".") -> pl.Series:
    """Decimal text with two places from whole cents, e.g. 1299 -> 12.99, -5 -> -0.05."""
    magnitude = np.abs(cents)
    parts: list[pl.Series | pl.Expr] = [
        int_text(magnitude // 100),
        pl.lit(separator),
        _digits(2).gather(_series(magnitude % 100)),
    ]
    if cents.size and int(cents.min()) < 0:
        parts.insert(0, pl.Series(np.where(cents < 0, 1, 0)).replace_strict([0, 1], ["", "-"]))
    return pl.select(pl.concat_str(parts)).to_series().rename("amount")
