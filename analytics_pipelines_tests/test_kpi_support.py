"""Helpers shared by the KPI tests: unique catalog entries, clean tables with typed rows, and an
independent (pandas) computation of KPI values to compare the SQL engine with."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from analytics_pipelines.lib.catalog import Catalog, ColumnSpec, KpiSpec, SourceSpec
from analytics_pipelines.lib.tables import clean_table, kpi_values, ledger, touched_periods
from analytics_pipelines.lib.warehouse import Warehouse

UTC = dt.UTC


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def make_source(name: str, *, event_type: str = "timestamp", timezone: str = "UTC") -> SourceSpec:
    return SourceSpec(
        name=name,
        value_chain="test_chain",
        landing_prefix=f"landing/{name}",
        format="csv",
        columns=[
            ColumnSpec(name="line_id", type="string", required=True),
            ColumnSpec(name="at", type=event_type),  # type: ignore[arg-type]
            ColumnSpec(name="order_id", type="string"),
            ColumnSpec(name="customer", type="string"),
            ColumnSpec(name="region", type="string"),
            ColumnSpec(name="channel", type="string"),
            ColumnSpec(name="qty", type="integer"),
            ColumnSpec(name="price", type="decimal"),
            ColumnSpec(name="discount", type="decimal"),
            ColumnSpec(name="status", type="string"),
            ColumnSpec(name="paid", type="boolean"),
            ColumnSpec(name="shipped_on", type="date"),
        ],
        primary_key=["line_id"],
        event_time="at",
        timezone=timezone,
    )


def make_kpi(name: str, source: str, **fields: Any) -> KpiSpec:
    values: dict[str, Any] = {
        "name": name,
        "value_chain": "test_chain",
        "description": f"test KPI {name}",
        "source": source,
        "timezone": "UTC",
    }
    values.update(fields)
    return KpiSpec(**values)


def make_catalog(sources: Iterable[SourceSpec], kpis: Iterable[KpiSpec]) -> Catalog:
    catalog = Catalog(root=Path("/nonexistent/test-catalog"))
    for source in sources:
        catalog.sources[source.name] = source
        catalog.origins[source.name] = Path("sources/test.yaml")
    for kpi in kpis:
        catalog.kpis[kpi.name] = kpi
        catalog.origins[kpi.name] = Path("kpis/test.yaml")
    return catalog


def create_clean(warehouse: Warehouse, source: SourceSpec, rows: list[dict[str, Any]]) -> None:
    """Create `clean.<source>` as the clean layer shapes it and insert typed rows."""
    table = clean_table(source)
    with warehouse.begin() as conn:
        table.create(conn, checkfirst=True)
        insert_clean(conn, source, rows)


def insert_clean(conn: sa.Connection, source: SourceSpec, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    names = [c.name for c in source.columns]
    start = conn.execute(
        sa.select(sa.func.coalesce(sa.func.max(clean_table(source).c._line), 0))
    ).scalar_one()
    payload = [
        {**{n: row.get(n) for n in names}, "_file_id": row.get("_file_id", 1), "_line": start + i}
        for i, row in enumerate(rows, start=1)
    ]
    conn.execute(clean_table(source).insert(), payload)


def record_touched(
    warehouse: Warehouse, source: str, slots: list[dt.datetime], object_key: str | None = None
) -> int:
    """A ledger row for a (fake) file version plus the 15-minute slots it touched; its file id."""
    with warehouse.begin() as conn:
        file_id = conn.execute(
            ledger.insert()
            .values(
                source=source,
                object_key=object_key or f"landing/{source}/{uuid.uuid4().hex}.csv",
                etag=uuid.uuid4().hex,
                size_bytes=1,
                status="loaded",
            )
            .returning(ledger.c.file_id)
        ).scalar_one()
        conn.execute(
            touched_periods.insert(),
            [{"source": source, "file_id": file_id, "slot_start": s} for s in slots],
        )
    return int(file_id)


def last_touched_id(warehouse: Warehouse) -> int:
    with warehouse.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.coalesce(sa.func.max(touched_periods.c.id), 0))
            ).scalar_one()
        )


def stored_values(
    warehouse: Warehouse, kpi: str
) -> dict[tuple[str, dt.datetime, frozenset[tuple[str, Any]]], Decimal | None]:
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.select(
                kpi_values.c.grain,
                kpi_values.c.period_start,
                kpi_values.c.dimensions,
                kpi_values.c.value,
            ).where(kpi_values.c.kpi == kpi)
        ).all()
    return {
        (row.grain, row.period_start.astimezone(UTC), frozenset(row.dimensions.items())): row.value
        for row in rows
    }


@contextmanager
def statements_run() -> Iterator[list[str]]:
    """Collect the SQL statements sent through any SQLAlchemy engine inside the block (the
    Dagster resource has an engine of its own)."""
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", listener)


# -- the independent computation -----------------------------------------------------------------


def pandas_period_start(moments: pd.Series, grain: str, timezone: str) -> pd.Series:
    """Start (UTC) of the local period of each moment, by pandas' own calendar logic."""
    utc = moments.dt.tz_convert("UTC")
    if grain == "hour":  # whole-hour zones only (UTC, Europe/Berlin): local hours are UTC hours
        return utc.dt.floor("h")
    local = utc.dt.tz_convert(timezone).dt.tz_localize(None)
    freq = {"day": "D", "week": "W-SUN", "month": "M", "quarter": "Q", "year": "Y"}[grain]
    starts = local.dt.to_period(freq).dt.start_time
    return starts.dt.tz_localize(timezone).dt.tz_convert("UTC")


def expected_values(
    frame: pd.DataFrame,
    *,
    grains: Sequence[str],
    timezone: str,
    dimensions: list[str],
    measure: Callable[[pd.DataFrame], Any],
    keep: Callable[[pd.DataFrame], pd.Series] | None = None,
) -> dict[tuple[str, dt.datetime, frozenset[tuple[str, Any]]], float | None]:
    """KPI values per grain, period and every subset of the dimensions (the total included).

    A cell exists where the source has rows (before the KPI's filter); the measure sees the
    rows of the cell that `keep` keeps, possibly none (a count of 0, a sum of 0).
    """
    data = frame[frame["at"].notna()]
    result: dict[tuple[str, dt.datetime, frozenset[tuple[str, Any]]], float | None] = {}
    for grain in grains:
        periods = pandas_period_start(data["at"], grain, timezone)
        with_period = data.assign(_period=periods)
        for size in range(len(dimensions) + 1):
            for subset in combinations(dimensions, size):
                keys = ["_period", *subset]
                for raw_key, group in with_period.groupby(keys, dropna=False):
                    key: tuple[Any, ...] = raw_key if isinstance(raw_key, tuple) else (raw_key,)
                    dims = frozenset(
                        (name, None if pd.isna(value) else value)
                        for name, value in zip(subset, key[1:], strict=True)
                    )
                    value = measure(group[keep(group)] if keep is not None else group)
                    start = key[0].to_pydatetime().astimezone(UTC)
                    result[(grain, start, dims)] = None if pd.isna(value) else float(value)
    return result


def assert_same_values(
    stored: dict[Any, Decimal | None], expected: dict[Any, float | None], label: str
) -> None:
    missing = sorted(set(expected) - set(stored), key=str)[:5]
    extra = sorted(set(stored) - set(expected), key=str)[:5]
    assert not missing and not extra, f"{label}: missing {missing}, unexpected {extra}"
    for key, want in expected.items():
        got = stored[key]
        if want is None:
            assert got is None, f"{label} {key}: expected NULL, got {got}"
        else:
            assert got is not None, f"{label} {key}: expected {want}, got NULL"
            assert abs(float(got) - want) <= 1e-9 * max(1.0, abs(want)), (
                f"{label} {key}: expected {want}, got {got}"
            )
