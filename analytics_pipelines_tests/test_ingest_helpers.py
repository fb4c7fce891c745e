"""Shared helpers of the ingestion tests (sources with unique names, reading back what landed)."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from analytics_pipelines.lib.catalog.models import ColumnSpec, ReaderOptions, SourceSpec
from analytics_pipelines.lib.tables import ledger
from analytics_pipelines.lib.warehouse import Warehouse

COLUMNS = [
    ColumnSpec(name="order_id", required=True),
    ColumnSpec(name="ordered_at", type="timestamp", required=True),
    ColumnSpec(name="region"),
    ColumnSpec(name="amount", type="decimal"),
]


def make_source(
    fmt: str = "csv",
    *,
    reader: ReaderOptions | None = None,
    columns: list[ColumnSpec] | None = None,
) -> SourceSpec:
    name = f"t_{uuid.uuid4().hex[:10]}"
    return SourceSpec(
        name=name,
        value_chain="tests",
        description="Test deliveries.",
        landing_prefix=f"landing/{name}",
        format=fmt,  # type: ignore[arg-type]
        reader=reader or ReaderOptions(),
        columns=columns or COLUMNS,
        primary_key=["order_id"],
        event_time="ordered_at",
        timezone="Europe/Berlin",
    )


def key_of(source: SourceSpec, name: str) -> str:
    return f"{source.landing_prefix}{name}"


def raw_rows(
    warehouse: Warehouse, source: SourceSpec, file_id: int | None = None
) -> list[dict[str, Any]]:
    table = sa.Table(source.name, sa.MetaData(), schema="raw", autoload_with=warehouse.engine)
    query = sa.select(table).order_by(table.c._file_id, table.c._line)
    if file_id is not None:
        query = query.where(table.c._file_id == file_id)
    with warehouse.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def raw_count(warehouse: Warehouse, source: SourceSpec) -> int:
    table = sa.Table(source.name, sa.MetaData(), schema="raw", autoload_with=warehouse.engine)
    with warehouse.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def ledger_rows(warehouse: Warehouse, source: SourceSpec) -> list[dict[str, Any]]:
    with warehouse.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                sa.select(ledger).where(ledger.c.source == source.name).order_by(ledger.c.file_id)
            )
        ]


def by_key(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["object_key"] == key]


def values(rows: list[dict[str, Any]], *columns: str) -> list[tuple[Any, ...]]:
    return [tuple(r[c] for c in columns) for r in rows]


def test_generator_reader_hands_out_large_and_view_chunks_in_order() -> None:
    from analytics_pipelines.lib.chunk_reader import ChunkReader

    data = bytes(range(256)) * 4096
    chunks = [data[:10], memoryview(data)[10:700_000], b"", data[700_000:]]
    reader = ChunkReader(chunks)
    pieces = []
    while piece := reader.read(65_536):
        assert isinstance(piece, bytes) and len(piece) <= 65_536
        pieces.append(piece)
    assert b"".join(pieces) == data
    assert reader.read(10) == b""
