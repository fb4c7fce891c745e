"""Readers: turn a received object into a header plus a byte stream that COPY can ingest.

CSV is never parsed in Python: the header line is read and stripped here and the remaining
bytes go to COPY as they are. Parquet and xlsx are converted in bounded batches to CSV bytes.
JSON lines become CSV when polars reads them exactly (`jsonl_csv`); otherwise they go to the
database line by line and are unpacked there (`jsonl`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal, cast

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.chunk_reader import ChunkReader
from analytics_pipelines.lib.ingest.errors import FileRejected
from analytics_pipelines.lib.ingest.jsonl_csv import spool_as_csv
from analytics_pipelines.lib.ingest.streams import (
    CHUNK,
    chunks_of,
    maybe_decompress,
    peek,
    without_trailing_blank_lines,
)

# How catalog encodings are spelled for PostgreSQL's COPY ... ENCODING.
PG_ENCODINGS = {"utf-8": "UTF8", "utf-8-sig": "UTF8", "latin-1": "LATIN1", "cp1252": "WIN1252"}
UTF8_BOM = b"\xef\xbb\xbf"
MAX_HEADER_BYTES = 1 << 20
PARQUET_BATCH_ROWS = 65_536
XLSX_BATCH_ROWS = 5_000

_MAGIC_NAMES = ((b"PAR1", "a Parquet file"), (b"PK\x03\x04", "a zip archive or Excel workbook"))


@dataclass
class CopyPlan:
    """What COPY needs for one file: the received column names in file order and the bytes."""

    kind: Literal["csv", "jsonl"]
    columns: list[str]
    body: IO[bytes]
    first_line: int = 1
    options: dict[str, str | bool] = field(default_factory=dict)
    # True when the body's first field is the file line number (converted formats).
    line_in_body: bool = False
    cleanup: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for item in self.cleanup:
            item.close()


def _wrong_format(head: bytes, expected: str) -> None:
    for magic, name in _MAGIC_NAMES:
        if head.startswith(magic):
            raise FileRejected(f"the file is {name}, but the source expects {expected}")


def _read_lines(stream: IO[bytes], count: int) -> tuple[list[bytes], bytes]:
    """The first `count` lines (without line ends) and the bytes read past them."""
    buffer = b""
    lines: list[bytes] = []
    start = 0
    while len(lines) < count:
        end = buffer.find(b"\n", start)
        if end < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                raise FileRejected("no line break in the first 1 MB: is the delimiter right?")
            chunk = stream.read(1 << 16)
            if not chunk:
                if buffer[start:]:
                    lines.append(buffer[start:])
                    start = len(buffer)
                break
            buffer += chunk
            continue
        lines.append(buffer[start:end].rstrip(b"\r"))
        start = end + 1
    return lines, buffer[start:]


def _header_names(line: bytes, source: SourceSpec) -> list[str]:
    encoding = source.reader.encoding
    try:
        text = line.decode("utf-8" if encoding == "utf-8-sig" else encoding)
    except UnicodeDecodeError as error:
        raise FileRejected(
            f"the header line is not valid {encoding} text (byte {error.start + 1}); "
            "is the file in another encoding?"
        ) from None
    rows = list(
        csv.reader([text], delimiter=source.reader.delimiter, quotechar=source.reader.quote)
    )
    return [name.strip() for name in rows[0]] if rows else []


def plan_csv(stream: IO[bytes], source: SourceSpec) -> CopyPlan:
    head, stream = peek(stream, 4)
    _wrong_format(head, "CSV")
    header_row = source.reader.header_row
    lines, rest = _read_lines(stream, header_row)
    if not lines or not any(line.strip() for line in lines):
        raise FileRejected("the file is empty (no header line)")
    if len(lines) < header_row:
        raise FileRejected(
            f"the file has only {len(lines)} line(s); the header is on line {header_row}"
        )
    if lines[0].startswith(UTF8_BOM) and source.reader.encoding.startswith("utf-8"):
        lines[0] = lines[0][len(UTF8_BOM) :]
    names = _header_names(lines[-1], source)
    if not any(names):
        raise FileRejected(f"the header line (line {header_row}) is blank")
    reader = source.reader
    return CopyPlan(
        kind="csv",
        columns=names,
        body=cast(
            IO[bytes],
            ChunkReader(without_trailing_blank_lines(itertools.chain([rest], chunks_of(stream)))),
        ),
        first_line=header_row + 1,
        options={
            "DELIMITER": reader.delimiter,
            "QUOTE": reader.quote,
            "ESCAPE": reader.quote,
            "ENCODING": PG_ENCODINGS[reader.encoding],
        },
    )


def plan_jsonl(stream: IO[bytes], source: SourceSpec) -> CopyPlan:
    head, stream = peek(stream, 4)
    _wrong_format(head, "JSON lines")
    encoding = source.reader.encoding
    # Each line is one field: these control bytes never occur unescaped in valid JSON.
    lines = CopyPlan(
        kind="jsonl",
        columns=[],
        body=stream,
        options={"DELIMITER": "\x01", "QUOTE": "\x02", "ENCODING": PG_ENCODINGS[encoding]},
    )
    if not encoding.startswith("utf-8"):
        return lines
    bom, stream = peek(stream, 3)
    if bom == UTF8_BOM:
        stream.read(3)
    lines.body, exact = spool_as_csv(stream)
    if exact is None:
        lines.cleanup = [lines.body]
        return lines
    return CopyPlan(
        kind="csv", columns=exact.columns, body=exact.body, cleanup=[exact.body, lines.body]
    )


def _spool(stream: IO[bytes]) -> IO[bytes]:
    """Columnar and zip formats need random access: copy to a temporary file (bounded memory)."""
    # Closed by CopyPlan.close() once the load has read it.
    spooled = tempfile.TemporaryFile()  # noqa: SIM115
    shutil.copyfileobj(stream, spooled, CHUNK)
    spooled.seek(0)
    return spooled


def _csv_text_of_rows(rows: list[list[str | None]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def plan_parquet(stream: IO[bytes], source: SourceSpec) -> CopyPlan:
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    spooled = _spool(stream)
    try:
        parquet = pq.ParquetFile(spooled)
    except (pa.ArrowInvalid, OSError) as error:
        spooled.close()
        raise FileRejected(f"the file is not a readable Parquet file ({error})") from None
    schema = parquet.schema_arrow
    for item in schema:
        if pa.types.is_nested(item.type) or pa.types.is_binary(item.type):
            spooled.close()
            raise FileRejected(
                f"column {item.name!r} has type {item.type}, which cannot be loaded as text"
            )
    text_schema = pa.schema([(name, pa.string()) for name in schema.names])
    options = pa_csv.WriteOptions(include_header=False)

    def batches() -> Iterator[bytes]:
        try:
            for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                sink = io.BytesIO()
                pa_csv.write_csv(pa.Table.from_batches([batch]).cast(text_schema), sink, options)
                yield sink.getvalue()
        except (pa.ArrowInvalid, OSError) as error:
            raise FileRejected(f"the Parquet data cannot be read ({error})") from None

    return CopyPlan(
        kind="csv",
        columns=list(schema.names),
        body=cast(IO[bytes], ChunkReader(batches())),
        cleanup=[spooled],
    )


def _cell_text(value: Any) -> str | None:
    """A cell as text, as raw stored it when openpyxl read sheets (a date cell at midnight)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return f"{value.isoformat()}T00:00:00"
    if isinstance(value, dt.datetime | dt.time):
        return value.isoformat()
    return str(value)


def plan_xlsx(stream: IO[bytes], source: SourceSpec) -> CopyPlan:
    # calamine (Rust) parses the sheet; cells become text in Python, which is acceptable
    # because a sheet holds at most ~1M rows; rows are still sent in bounded batches.
    from python_calamine import CalamineError, CalamineWorkbook

    spooled = _spool(stream)
    try:
        workbook = CalamineWorkbook.from_filelike(spooled)
    except (CalamineError, OSError) as error:
        spooled.close()
        raise FileRejected(f"the file is not an Excel .xlsx workbook ({error})") from None
    sheet_name = source.reader.sheet
    if sheet_name is not None and sheet_name not in workbook.sheet_names:
        spooled.close()
        raise FileRejected(
            f"the workbook has no sheet {sheet_name!r} (sheets: {', '.join(workbook.sheet_names)})"
        )
    try:
        sheet = workbook.get_sheet_by_name(sheet_name or workbook.sheet_names[0])
    except (CalamineError, OSError) as error:
        spooled.close()
        raise FileRejected(f"the sheet cannot be read ({error})") from None
    header_row = source.reader.header_row
    # Rows are counted from the sheet's first row, columns from its first used one.
    lead: list[None] = [None] * (sheet.start[1] if sheet.start else 0)
    rows = iter(sheet.iter_rows())
    header = next(itertools.islice(rows, header_row - 1, None), None)
    names = [_cell_text(v) or "" for v in lead + list(header or ())]
    while names and not names[-1].strip():
        names.pop()
    if not names:
        spooled.close()
        raise FileRejected(f"the sheet {sheet.name!r} is empty (no header in row {header_row})")
    width = len(names)

    def batches() -> Iterator[bytes]:
        out: list[list[str | None]] = []
        for number, row in enumerate(rows, start=header_row + 1):
            cells = [_cell_text(v) for v in lead + row]
            if not any(c is not None for c in cells):
                continue
            if any(c is not None for c in cells[width:]):
                raise FileRejected(
                    f"row {number} has a value in column {width + 1} or later, which has no header"
                )
            cells = cells[:width] + [None] * (width - len(cells))
            out.append([str(number), *cells])
            if len(out) >= XLSX_BATCH_ROWS:
                yield _csv_text_of_rows(out)
                out = []
        if out:
            yield _csv_text_of_rows(out)

    return CopyPlan(
        kind="csv",
        columns=[n.strip() for n in names],
        body=cast(IO[bytes], ChunkReader(batches())),
        first_line=header_row + 1,
        line_in_body=True,
        cleanup=[workbook, spooled],
    )


def plan_copy(raw: IO[bytes], source: SourceSpec, key: str) -> CopyPlan:
    """The COPY plan for one object of `source`; FileRejected when it cannot be read."""
    if source.format in ("parquet", "xlsx"):
        planner = plan_parquet if source.format == "parquet" else plan_xlsx
        return planner(raw, source)
    stream = maybe_decompress(raw, source.reader.compression, key)
    if source.format == "csv":
        return plan_csv(stream, source)
    return plan_jsonl(stream, source)
