"""`copy_from`: the COPY format and option names are keywords, so only known ones reach the SQL."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from analytics_pipelines.lib.warehouse import Warehouse, copy_from


@pytest.fixture
def table(warehouse: Warehouse) -> Iterator[str]:
    name = f"copy_{uuid.uuid4().hex[:8]}"
    with warehouse.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE public.{name} (id bigint, label text)"))
    yield name
    with warehouse.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE public.{name}"))


def _rows(warehouse: Warehouse, table: str) -> list[tuple[object, ...]]:
    with warehouse.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(sa.text(f"SELECT id, label FROM public.{table} ORDER BY id"))
        ]


@pytest.mark.parametrize(
    ("format", "body", "options"),
    [
        ("csv", b"id,label\n1,a\n2,\n", {"header": True}),
        ("CSV", b"1;a\n2;\n", {"delimiter": ";"}),
        ("text", b"1\ta\n2\t\\N\n", None),
    ],
)
def test_allowed_formats_and_options_load(
    warehouse: Warehouse,
    table: str,
    format: str,
    body: bytes,
    options: dict[str, str | bool] | None,
) -> None:
    with warehouse.begin() as conn:
        count = copy_from(
            conn,
            ("public", table),
            ["id", "label"],
            io.BytesIO(body),
            format=format,
            options=options,
        )
    assert count == 2
    assert _rows(warehouse, table) == [(1, "a"), (2, None)]


@pytest.mark.parametrize(
    ("format", "options", "message"),
    [
        (
            "csv) TO PROGRAM 'true' --",
            None,
            r"unsupported COPY format .*\(one of: binary, csv, text\)",
        ),
        ("parquet", None, r"unsupported COPY format 'parquet' \(one of: binary, csv, text\)"),
        (
            "csv",
            {"header true, freeze": True},
            r"unsupported COPY option 'header true, freeze' \(one of: DELIMITER,",
        ),
        ("csv", {"program": "true"}, r"unsupported COPY option 'program' \(one of: DELIMITER,"),
    ],
)
def test_unknown_format_or_option_is_refused_before_any_sql(
    warehouse: Warehouse,
    table: str,
    format: str,
    options: dict[str, str | bool] | None,
    message: str,
) -> None:
    with warehouse.begin() as conn, pytest.raises(ValueError, match=message):
        copy_from(
            conn,
            ("public", table),
            ["id", "label"],
            io.BytesIO(b"1,a\n"),
            format=format,
            options=options,
        )
    assert _rows(warehouse, table) == []
