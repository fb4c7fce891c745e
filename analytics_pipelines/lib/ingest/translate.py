"""Database errors raised while reading a file, said in words an operator can act on."""

from __future__ import annotations

import re

import psycopg2

from analytics_pipelines.lib.catalog.models import SourceSpec

_COPY_LINE = re.compile(r"\bline (\d+)")


def describe_copy_error(
    error: psycopg2.Error, source: SourceSpec, first_line: int, columns: int
) -> str:
    """`line N: what is wrong` for COPY errors; N is the line number in the received file."""
    diag = error.diag
    message = (diag.message_primary or str(error)).strip()
    context = diag.context or ""
    match = _COPY_LINE.search(context)
    where = f"line {int(match.group(1)) + first_line - 1}: " if match else ""
    lowered = message.lower()
    if "extra data after last expected column" in lowered:
        what = (
            f"more fields than the {columns} header columns "
            f"(ragged row, or a delimiter other than {source.reader.delimiter!r} / an unquoted "
            "delimiter in a value)"
        )
    elif "missing data for column" in lowered:
        what = f"fewer fields than the {columns} header columns (ragged row)"
    elif "invalid byte sequence for encoding" in lowered and lowered.rstrip().endswith(": 0x00"):
        what = (
            "the file contains a NUL byte (0x00), which PostgreSQL text cannot hold; "
            "remove it or export the file again"
        )
    elif "invalid byte sequence for encoding" in lowered or "has no equivalent" in lowered:
        what = (
            f"bytes that are not valid {source.reader.encoding} text ({message}); "
            "declare the file's real encoding in the catalog (reader.encoding)"
        )
    elif "unterminated csv quoted field" in lowered:
        what = f"a field opened with {source.reader.quote} is never closed (unterminated quote)"
    elif "carriage return" in lowered or "newline found in data" in lowered:
        what = "mixed line endings (CR/LF) outside quoted fields"
    else:
        what = message
    return f"{where}{what}"
