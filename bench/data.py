"""Orders-like CSV files of a given size, generated column-wise (fast, reproducible)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from analytics_pipelines.lib.catalog.models import ColumnSpec, SourceSpec

COLUMNS = [
    ColumnSpec(name="order_id", required=True),
    ColumnSpec(name="line_no", type="integer", required=True),
    ColumnSpec(name="ordered_at", type="timestamp", required=True),
    ColumnSpec(name="customer_id", required=True),
    ColumnSpec(name="region"),
    ColumnSpec(name="channel"),
    ColumnSpec(name="product_sku"),
    ColumnSpec(name="quantity", type="integer"),
    ColumnSpec(name="unit_price", type="decimal"),
    ColumnSpec(name="status"),
]
BYTES_PER_ROW = 81  # measured on generated files; used to size files by megabytes


def bench_source(name: str) -> SourceSpec:
    return SourceSpec(
        name=name,
        value_chain="bench",
        landing_prefix=f"landing/{name}",
        format="csv",
        columns=COLUMNS,
        primary_key=["order_id", "line_no"],
        event_time="ordered_at",
        timezone="Europe/Berlin",
    )


def _frame(start: int, rows: int, rng: np.random.Generator) -> pl.DataFrame:
    index = np.arange(start, start + rows)
    raw = pl.DataFrame(
        {
            "order": index // 3,
            "line_no": index % 3 + 1,
            "seconds": rng.integers(0, 365 * 86400, rows),
            "customer": rng.integers(1, 200_000, rows),
            "region": rng.choice(["north", "south", "east", "west"], rows),
            "channel": rng.choice(["web", "store", "partner"], rows),
            "sku": rng.integers(1, 5000, rows),
            "quantity": rng.integers(1, 20, rows),
            "unit_price": rng.integers(100, 100_000, rows) / 100,
            "status": rng.choice(["placed", "shipped", "returned", "cancelled"], rows),
        }
    )
    return raw.select(
        pl.concat_str(pl.lit("ORD-"), pl.col("order").cast(pl.String).str.zfill(8)).alias(
            "order_id"
        ),
        "line_no",
        (pl.datetime(2024, 1, 1) + pl.duration(seconds=pl.col("seconds")))
        .dt.strftime("%Y-%m-%dT%H:%M:%S")
        .alias("ordered_at"),
        pl.concat_str(pl.lit("C"), pl.col("customer").cast(pl.String)).alias("customer_id"),
        "region",
        "channel",
        pl.concat_str(pl.lit("SKU-"), pl.col("sku").cast(pl.String)).alias("product_sku"),
        "quantity",
        "unit_price",
        "status",
    )


def write_orders_csv(path: Path, rows: int, *, seed: int = 7, first: int = 0) -> Path:
    """Write `rows` data rows (plus a header) to `path` in bounded chunks; reuse an existing file.

    Row `i` of the file is order line `first + i`: files with different `first` share no key.
    """
    if (
        path.exists()
        and path.with_suffix(".rows").exists()
        and path.with_suffix(".rows").read_text() == f"{rows}@{first}"
    ):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chunk = 1_000_000
    with path.open("wb") as handle:
        for start in range(0, rows, chunk):
            frame = _frame(first + start, min(chunk, rows - start), rng)
            frame.write_csv(handle, include_header=start == 0)
    path.with_suffix(".rows").write_text(f"{rows}@{first}")
    return path
