"""PostgreSQL's binary COPY format, built from typed polars frames by pgpq (Arrow → COPY).

Binary COPY spares the server its CSV parser and, above all, its text input functions for
timestamps and numerics: for the clean stage that is about half of the server's work per row.
pgpq writes every field in Rust, column by column. Decimals are the exception: pgpq gives every
value its column's one scale (`62.0` would become `62.00`), so their NUMERIC wire form is built
here with whole-column numpy operations, each value with its own display scale, and handed to
pgpq as binary fields (a binary COPY field is its length and bytes, whatever the column's type).

Frame column types by catalog type: string → String, integer → Int64, decimal → String (the
validated text, `.` as separator), boolean → Boolean, date → Date, timestamp → Datetime("us")
holding the UTC instant without a zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pgpq
import polars as pl
import pyarrow as pa

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"
_NUMERIC_NEGATIVE = 0x4000
# Decimals are encoded from their unscaled value in an int64 (up to 18 digits in all).
MAX_FRACTION_DIGITS = 16


class Unencodable(Exception):
    """A value this encoder does not produce exactly (the caller falls back to text)."""


def _nulls(series: pl.Series) -> np.ndarray | None:
    return series.is_null().to_numpy() if series.null_count() else None


def _exponent_scale(series: pl.Series) -> pl.Series:
    """Display scale as `numeric` input gives it, exponent notation included: the mantissa's
    fraction digits minus the exponent, at least 0 (`1.50e1` → 15.0, `1.5e-3` → 0.0015)."""
    parts = series.str.to_lowercase().str.split_exact("e", 1).struct.unnest()
    mantissa = pl.col("field_0")
    point = mantissa.str.find(".", literal=True)
    fraction = pl.when(point.is_null()).then(0).otherwise(mantissa.str.len_bytes() - point - 1)
    exponent = pl.col("field_1").cast(pl.Int64, strict=False).fill_null(0)
    return parts.select(
        pl.max_horizontal(fraction.cast(pl.Int64) - exponent, pl.lit(0)).alias("scale")
    ).to_series()


def _numeric(series: pl.Series) -> Any:
    """NUMERIC's wire form of each value as an Arrow binary array: digit count, weight, sign,
    display scale, base-10000 digits."""
    text = pl.col("t")
    point = text.str.find(".", literal=True)
    shape = pl.DataFrame({"t": series}).select(
        scale=pl.when(point.is_null()).then(0).otherwise(text.str.len_bytes() - point - 1),
        exponent=text.str.contains("e", literal=True) | text.str.contains("E", literal=True),
    )
    if shape.get_column("exponent").any():
        shape = shape.with_columns(scale=_exponent_scale(series))
    most = int(shape.get_column("scale").max() or 0)  # type: ignore[arg-type]
    if most > MAX_FRACTION_DIGITS:
        raise Unencodable("a decimal with more fraction digits than the binary encoder handles")
    exact = series.cast(pl.Decimal(38, most), strict=False)
    nulls = _nulls(series)
    if exact.null_count() != series.null_count():
        raise Unencodable("a decimal the binary encoder cannot read")
    decimal = exact.to_arrow()
    # decimal128: two little-endian 64-bit words per value; values fitting in int64 have a
    # high word that only extends the low word's sign.
    low, high = (
        np.frombuffer(decimal.buffers()[1], np.int64)
        .reshape(-1, 2)[decimal.offset : decimal.offset + len(decimal)]
        .T
    )
    if nulls is not None:
        low, high = np.where(nulls, 0, low), np.where(nulls, 0, high)
    if not np.array_equal(high, np.where(low < 0, -1, 0)):
        raise Unencodable("a decimal with more digits than the binary encoder handles")
    magnitude = np.abs(low)
    whole, fraction = np.divmod(magnitude, 10**most)
    whole_groups = max(1, -(-len(str(int(whole.max()))) // 4))
    fraction_groups = -(-most // 4)
    # The fraction's digits left-aligned in 4 * fraction_groups places.
    fraction = fraction * 10 ** (4 * fraction_groups - most)
    words = np.empty((len(series), 4 + whole_groups + fraction_groups), np.int64)
    words[:, 0] = whole_groups + fraction_groups
    words[:, 1] = whole_groups - 1
    words[:, 2] = np.where(low < 0, _NUMERIC_NEGATIVE, 0)
    words[:, 3] = shape.get_column("scale").fill_null(0).to_numpy()
    for k in range(whole_groups):
        words[:, 4 + k] = whole // 10_000 ** (whole_groups - 1 - k) % 10_000
    for k in range(fraction_groups):
        words[:, 4 + whole_groups + k] = fraction // 10_000 ** (fraction_groups - 1 - k) % 10_000
    width = 2 * words.shape[1]
    validity = None if nulls is None else pa.array(~nulls).buffers()[1]
    offsets = np.arange(0, width * (len(series) + 1), width, dtype=np.int64)
    buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(words.astype(">u2"))]
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(series), buffers)


def _arrow(series: pl.Series, kind: str) -> Any:
    """The column as the Arrow array pgpq encodes as PostgreSQL's binary form of `kind`."""
    if kind == "decimal":
        return _numeric(series)
    if kind == "timestamp":
        series = series.dt.cast_time_unit("us")
    elif kind not in ("string", "integer", "boolean", "date"):
        raise ValueError(f"no binary encoding for {kind!r}")
    return series.to_arrow()


def stream_order(kinds: Sequence[str]) -> list[int]:
    """Column positions in the clean COPY's order: fixed-width types first, text last (every
    version's COPY lists the columns alike)."""
    return sorted(range(len(kinds)), key=lambda i: kinds[i] == "string")


def encode_rows(frame: pl.DataFrame, kinds: Sequence[str]) -> bytes | memoryview:
    """The tuples of `frame` (one field per column, of the given catalog types), without the
    stream's header and trailer."""
    if frame.height == 0:
        return b""
    batch = pa.RecordBatch.from_arrays(
        [_arrow(s, kind) for s, kind in zip(frame.iter_columns(), kinds, strict=True)],
        names=frame.columns,
    )
    encoder = pgpq.ArrowToPostgresBinaryEncoder(batch.schema)
    encoder.write_header()
    # pgpq buffers: a large batch comes back from write_batch, a small one from finish().
    rows = encoder.write_batch(batch)
    rest = memoryview(encoder.finish())[: -len(TRAILER)]
    return rows + rest if len(rest) else rows
