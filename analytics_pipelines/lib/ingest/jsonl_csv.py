"""JSON lines read by polars into CSV, when that is provably exact (else: SQL, see `jsonl`).

Raw keeps each value's text as written (`1.50` stays `1.50`, `1e3` stays `1e3`). polars
parses numbers into floats, so its text of a value is trusted only when re-encoding every
parsed line gives back the line itself, spaces aside (the encoder writes none between tokens
and keeps those inside strings): then every number was written as polars writes it, each line
holds the same keys in the same order, and strings decode as PostgreSQL's `json` decodes
them. Any other file (exponents, `-0`, `1` where others say `1.0`, nested values, keys that
vary, blank lines, `\\u0000`, invalid JSON or UTF-8) gets None, and the SQL way.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from typing import IO

import polars as pl

BATCH_BYTES = 32 << 20
_NOT_EXACT = (pl.exceptions.PolarsError, pl.exceptions.PanicException)
# Left to PostgreSQL's own decoding: NUL (refused, with its line) and surrogates.
_ESCAPES_FOR_SQL = r"\\u(?:0000|[dD][89a-fA-F])"
# A JSON string, and the `:` after it when it is a key.
_STRING = r'("(?:[^"\\]|\\.)*")(\s*:)|"(?:[^"\\]|\\.)*"'


def _unspaced(lines: pl.Series) -> pl.Series:
    return lines.str.replace_all(" ", "", literal=True)


def _skeleton(lines: pl.Series) -> pl.Series:
    """The lines without their string values (keys stay) and spaces."""
    return _unspaced(lines.str.replace_all(_STRING, "${1}${2}"))


@dataclass
class JsonAsCsv:
    """The file's keys in PostgreSQL's order (first line's keys, sorted) and its rows as CSV."""

    columns: list[str]
    body: IO[bytes]


def _csv_of_batch(data: bytes, schema: pl.Schema | None) -> tuple[bytes, pl.Schema] | None:
    """One batch of whole lines as CSV text (`schema`: the first batch's), or None."""
    try:
        lines = pl.read_csv(
            io.BytesIO(data),
            has_header=False,
            separator="\x01",  # never unescaped in JSON: one field per line
            quote_char=None,
            schema={"line": pl.String},
        )["line"]
        if lines.null_count() or lines.str.contains(_ESCAPES_FOR_SQL).any():
            return None
        frame = pl.read_ndjson(io.BytesIO(data), schema=schema)
        if frame.height != lines.len() or any(d.is_nested() for d in frame.dtypes):
            return None
        encoded = frame.select(pl.struct(pl.all()).struct.json_encode()).to_series()
        # Written as polars writes JSON, or with spaces, or with strings escaped otherwise
        # (`\u00e9` for `é`): each looser check sees only the lines the one before left.
        written, read = encoded, lines
        differ = written != read
        for spelling in (_unspaced, _skeleton):
            if not differ.any():
                break
            written, read = spelling(written.filter(differ)), spelling(read.filter(differ))
            differ = written != read
        if differ.any():
            return None
        # A value's own text: what the (verified) encoder writes for it alone.
        texts = frame.select(
            pl.col(name).cast(pl.String)  # integers and flags are written as cast
            if dtype in (pl.String, pl.Int64, pl.Boolean)
            else pl.when(pl.col(name).is_not_null())
            .then(pl.struct(pl.col(name).alias("v")).struct.json_encode().str.slice(5))
            .str.head(-1)
            .alias(name)
            for name, dtype in frame.schema.items()
        )
        return texts.select(sorted(texts.columns)).write_csv(include_header=False).encode(), (
            frame.schema
        )
    except _NOT_EXACT:
        return None


def spool_as_csv(stream: IO[bytes]) -> tuple[IO[bytes], JsonAsCsv | None]:
    """The UTF-8 lines of `stream` spooled (read from the start), and their CSV when exact.

    Both are temporary files the caller closes; memory holds one batch at a time.
    """
    # Closed by the caller's CopyPlan.
    original = tempfile.TemporaryFile()  # noqa: SIM115
    converted: IO[bytes] | None = tempfile.TemporaryFile()  # noqa: SIM115
    schema: pl.Schema | None = None
    rest = b""
    while True:
        chunk = stream.read(BATCH_BYTES)
        data = rest + chunk
        end = data.rfind(b"\n") + 1 if chunk else len(data)
        batch, rest = data[:end], data[end:]
        original.write(batch)
        if converted is not None and batch:
            result = _csv_of_batch(batch, schema)
            if result is None:
                converted.close()
                converted = None
            else:
                converted.write(result[0])
                schema = result[1]
        if not chunk:
            break
    original.seek(0)
    if converted is None or schema is None:
        if converted is not None:
            converted.close()
        return original, None
    converted.seek(0)
    return original, JsonAsCsv(sorted(schema.names()), converted)
