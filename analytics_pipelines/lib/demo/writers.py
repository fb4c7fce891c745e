"""Append generated chunks to one file per format, so a file of any size needs one chunk of memory."""

from __future__ import annotations

from typing import IO, Protocol

import polars as pl
import pyarrow.parquet as pq


class ChunkWriter(Protocol):
    def write(self, frame: pl.DataFrame) -> None: ...

    def close(self) -> None: ...


class CsvChunkWriter:
    """One header, then every chunk's rows; missing values are empty fields."""

    def __init__(self, stream: IO[bytes], delimiter: str = ",", quote: str = '"') -> None:
        self._stream = stream
        self._delimiter = delimiter
        self._quote = quote
        self._header = True

    def write(self, frame: pl.DataFrame) -> None:
        frame.write_csv(
            self._stream,
            include_header=self._header,
            separator=self._delimiter,
            quote_char=self._quote,
        )
        self._header = False

    def close(self) -> None:
        self._stream.flush()


class JsonlChunkWriter:
    """One object per line from columns already holding JSON literals (`"HAM"`, `12`, `null`)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        parts: list[pl.Expr] = []
        for position, name in enumerate(frame.columns):
            parts.append(pl.lit(("{" if position == 0 else ",") + f'"{name}":'))
            parts.append(pl.col(name).fill_null("null"))
        parts.append(pl.lit("}\n"))
        text = frame.select(pl.concat_str(parts).str.join("")).item()
        self._stream.write(text.encode("utf-8"))

    def close(self) -> None:
        self._stream.flush()


class ParquetChunkWriter:
    """Each chunk becomes a row group; a file without rows still carries the typed schema."""

    def __init__(self, stream: IO[bytes], empty: pl.DataFrame) -> None:
        self._stream = stream
        self._empty = empty
        self._writer: pq.ParquetWriter | None = None

    def write(self, frame: pl.DataFrame) -> None:
        table = frame.to_arrow()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._stream, table.schema, compression="zstd")
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is None:
            self.write(self._empty)
        assert self._writer is not None
        self._writer.close()
        self._stream.flush()


def writer_for(
    format: str, stream: IO[bytes], empty: pl.DataFrame, delimiter: str, quote: str
) -> ChunkWriter:
    if format == "csv":
        return CsvChunkWriter(stream, delimiter, quote)
    if format == "jsonl":
        return JsonlChunkWriter(stream)
    if format == "parquet":
        return ParquetChunkWriter(stream, empty)
    raise ValueError(f"the demo generator cannot write {format}")
