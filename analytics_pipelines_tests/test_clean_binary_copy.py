"""Binary COPY rows and zone offsets: PostgreSQL reads back exactly what its text input gives."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import date, datetime
from itertools import pairwise
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from analytics_pipelines.lib.clean import binary_copy
from analytics_pipelines.lib.clean.zone_offsets import AmbiguousSlot, ZoneOffsets
from analytics_pipelines.lib.warehouse import Warehouse, copy_from

KINDS = {
    "s": ("string", "text"),
    "i": ("integer", "bigint"),
    "d": ("decimal", "numeric"),
    "b": ("boolean", "boolean"),
    "day": ("date", "date"),
    "ts": ("timestamp", "timestamptz"),
}


@pytest.fixture
def table(warehouse: Warehouse) -> Iterator[str]:
    name = f"binary_{uuid.uuid4().hex[:8]}"
    columns = ", ".join(f"{column} {sql_type}" for column, (_, sql_type) in KINDS.items())
    with warehouse.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE public.{name} ({columns})"))
    yield name
    with warehouse.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE public.{name}"))


def _load(warehouse: Warehouse, table: str, frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    kinds = [KINDS[c][0] for c in frame.columns]
    stream = binary_copy.HEADER + binary_copy.encode_rows(frame, kinds) + binary_copy.TRAILER
    with warehouse.begin() as conn:
        copy_from(conn, ("public", table), frame.columns, io.BytesIO(stream), format="binary")
        rows = conn.execute(
            sa.text(
                f"SELECT s, i, d::text, b, day, ts AT TIME ZONE 'UTC' FROM public.{table}"
                " ORDER BY i NULLS LAST"
            )
        )
        return [tuple(r) for r in rows]


def test_every_type_with_nulls_reads_back_as_postgres_types_it(
    warehouse: Warehouse, table: str
) -> None:
    frame = pl.DataFrame(
        {
            "s": ["plain", None, "héllo ✓", ""],
            "i": [1, 2, -9223372036854775808, 9223372036854775807],
            "d": ["1.50", "-0.001", None, "+007.10"],
            "b": [True, None, False, True],
            "day": [date(2024, 2, 29), None, date(1, 1, 1), date(9999, 12, 31)],
            "ts": [datetime(2024, 1, 1, 12, 0, 0, 123456), None, datetime(1900, 1, 1), None],
        }
    )
    assert _load(warehouse, table, frame) == [
        ("héllo ✓", -9223372036854775808, None, False, date(1, 1, 1), datetime(1900, 1, 1)),
        ("plain", 1, "1.50", True, date(2024, 2, 29), datetime(2024, 1, 1, 12, 0, 0, 123456)),
        (None, 2, "-0.001", None, None, None),
        ("", 9223372036854775807, "7.10", True, date(9999, 12, 31), None),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "-0.000",
        ".5",
        "5.",
        "12345678901234567",
        "0.0000000000000001",
        "99999.9999",
        "-1",
        "1.5e2",
        "1.50E1",
        "-1.5e-3",
        ".5e1",
        "5.e-1",
        "12E+3",
    ],
)
def test_decimals_keep_value_and_scale_as_numeric_input_does(
    warehouse: Warehouse, table: str, text: str
) -> None:
    # A plain value beside it: the batch's largest scale must not change this value's scale.
    frame = pl.DataFrame({"i": [1, 2], "d": [text, "1.5"]})
    with warehouse.connect() as conn:
        expected = conn.execute(sa.text("SELECT CAST(:t AS numeric)::text"), {"t": text}).scalar()
    assert _load(warehouse, table, frame)[0][2] == expected


def test_a_large_batch_reads_back_whole(warehouse: Warehouse, table: str) -> None:
    # Large enough that the encoder hands its rows over before finishing (pgpq buffers).
    n = 60_000
    frame = pl.DataFrame(
        {
            "s": [f"row {i}" if i % 5 else None for i in range(n)],
            "i": list(range(n)),
            "d": [f"{i}.{i % 100:02d}" if i % 7 else f"{i}.5" for i in range(n)],
        }
    )
    got = _load(warehouse, table, frame)
    expected = [
        (f"row {i}" if i % 5 else None, i, f"{i}.{i % 100:02d}" if i % 7 else f"{i}.5")
        for i in range(n)
    ]
    assert [row[:3] for row in got] == expected


def test_decimals_outside_the_encoder_are_refused_not_mangled() -> None:
    for text in ("1e-17", "1e30", "1234567890.1234567890", "12345678901234567890"):
        with pytest.raises(binary_copy.Unencodable):
            binary_copy.encode_rows(pl.DataFrame({"d": [text]}), ["decimal"])


def test_stream_order_puts_fixed_width_columns_first() -> None:
    kinds = ["string", "integer", "string", "decimal", "timestamp"]
    assert [kinds[i] for i in binary_copy.stream_order(kinds)] == [
        "integer",
        "decimal",
        "timestamp",
        "string",
        "string",
    ]


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/Sao_Paulo", "Asia/Kolkata"])
def test_wall_times_become_the_instants_postgres_input_gives(
    warehouse: Warehouse, zone: str
) -> None:
    # Both daylight-saving changes of 2024 (and Sao Paulo's, abolished since 2019) and a
    # historic date: each wall time, its slot's first and last microsecond.
    walls = [
        datetime(2024, 3, 31, 1, 59, 59),
        datetime(2024, 3, 31, 2, 30),
        datetime(2024, 3, 31, 3, 0),
        datetime(2024, 10, 27, 2, 0),
        datetime(2024, 10, 27, 2, 59, 59, 999999),
        datetime(2024, 10, 27, 3, 0),
        datetime(2018, 11, 4, 0, 30),
        datetime(2019, 2, 16, 23, 30),
        datetime(1975, 6, 1, 12, 0),
    ]
    offsets = ZoneOffsets(warehouse.engine, zone)
    got = offsets.to_utc(pl.Series("w", walls, pl.Datetime("us"))).to_list()
    with warehouse.begin() as conn:
        conn.execute(sa.select(sa.func.set_config("TimeZone", zone, True)))
        expected = [
            conn.execute(
                sa.text("SELECT CAST(:t AS timestamptz) AT TIME ZONE 'UTC'"), {"t": str(w)}
            ).scalar()
            for w in walls
        ]
    assert got == expected


def test_a_slot_whose_offset_changes_inside_it_is_refused(warehouse: Warehouse) -> None:
    # Berlin left local mean time (+00:53:28) for CET at 1893-04-01 00:00, inside a slot.
    offsets = ZoneOffsets(warehouse.engine, "Europe/Berlin")
    with pytest.raises(AmbiguousSlot, match="Europe/Berlin"):
        offsets.to_utc(pl.Series("w", [datetime(1893, 4, 1, 0, 5)], pl.Datetime("us")))


def test_a_year_of_wall_times_read_in_batches_matches_postgres_input(warehouse: Warehouse) -> None:
    # Every 7 minutes for a year (both DST changes, every slot of the year) in three batches:
    # the first asks PostgreSQL, later ones mix known and new slots.
    walls = pl.datetime_range(
        datetime(2024, 1, 1), datetime(2024, 12, 31, 23, 59), "7m", eager=True
    ).alias("w")
    offsets = ZoneOffsets(warehouse.engine, "Europe/Berlin")
    cut = [0, walls.len() // 3, walls.len() // 2, walls.len()]
    got = pl.concat([offsets.to_utc(walls.slice(a, b - a)) for a, b in pairwise(cut)])
    with warehouse.begin() as conn:
        conn.execute(sa.select(sa.func.set_config("TimeZone", "Europe/Berlin", True)))
        expected = conn.execute(
            sa.text(
                "SELECT (w::text)::timestamptz AT TIME ZONE 'UTC' FROM unnest(CAST(:w AS"
                " timestamp[])) WITH ORDINALITY AS u(w, i) ORDER BY i"
            ),
            {"w": walls.to_list()},
        ).scalars()
        assert got.to_list() == list(expected)
