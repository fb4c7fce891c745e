"""A table's row count for the UI: exact when cheap, else PostgreSQL's estimate, named as one."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from analytics_pipelines.lib.table_rows import ESTIMATE_KEY, ROW_COUNT_KEY, table_rows
from analytics_pipelines.lib.warehouse import Warehouse


def _table_of(warehouse: Warehouse, rows: int) -> str:
    name = f"rows_{uuid.uuid4().hex[:10]}"
    with warehouse.begin() as conn:
        conn.execute(sa.text(f'CREATE TABLE raw."{name}" (n int)'))
        conn.execute(
            sa.text(f'INSERT INTO raw."{name}" SELECT generate_series(1, :rows)'), {"rows": rows}
        )
    return name


def test_exact_count_of_a_table_and_zero_for_one_not_created_yet(warehouse: Warehouse) -> None:
    name = _table_of(warehouse, 1234)
    assert table_rows(warehouse, "raw", name).metadata() == {ROW_COUNT_KEY: 1234}
    missing = table_rows(warehouse, "raw", f"{name}_missing")
    assert (missing.exact, missing.metadata()) == (0, {ROW_COUNT_KEY: 0})


def test_a_count_too_slow_reports_the_estimate_under_its_own_key(warehouse: Warehouse) -> None:
    name = _table_of(warehouse, 500)
    with warehouse.begin() as conn:
        conn.execute(sa.text(f'ANALYZE raw."{name}"'))
    # Another session holds the table: the count waits past its timeout, as on a huge table.
    with warehouse.engine.connect() as holder:
        holder.execute(sa.text(f'LOCK TABLE raw."{name}" IN ACCESS EXCLUSIVE MODE'))
        rows = table_rows(warehouse, "raw", name, timeout_ms=200)
        holder.rollback()
    assert (rows.exact, rows.estimate) == (None, 500)
    assert rows.metadata() == {ESTIMATE_KEY: 500}
