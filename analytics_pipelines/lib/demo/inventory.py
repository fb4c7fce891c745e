"""Demo `inventory_movements`: stock receipts, picks and adjustments, JSON lines, UTC or offset times.

Each movement also states `on_hand_after`, the stock of its warehouse and product once it is
booked, as warehouse systems export it: a running sum of the movements in generation order from
an opening stock, never below zero (a pick of more than is there takes what is left).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from analytics_pipelines.lib.catalog import SourceSpec
from analytics_pipelines.lib.demo.profile import (
    Fault,
    Profile,
    TimeSampler,
    skewed,
    unit_price_cents,
)
from analytics_pipelines.lib.demo.text import money, padded_ids
from analytics_pipelines.lib.demo.timefmt import render_instants

# The warehouse system writes UTC (`Z`); the Munich site's scanners write local time with offset.
OFFSET_SHARE = 0.15
PRODUCTS = 5_000


def opening_stock(keys: np.ndarray) -> np.ndarray:
    """A stable opening stock per warehouse x product key: 20 to 200 units."""
    return 20 + (keys * 7919) % 181


def running_stock(
    keys: np.ndarray, quantity: np.ndarray, opening: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Stock before and after each movement (rows in time order), per key, floored at zero.

    The floored walk b_i = max(0, b_(i-1) + q_i) equals level_i - min(0, running min of level)
    with level = opening + cumulative sum: computed with one sort and cumulative sums.
    """
    order = np.argsort(keys, kind="stable")
    sorted_keys, moves = keys[order], quantity[order]
    new_key = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    starts = np.flatnonzero(new_key)
    group = np.cumsum(new_key) - 1
    total = np.cumsum(moves)
    level = opening[order] + total - (total[starts] - moves[starts])[group]
    # Shift each later key far below the earlier ones, so one running minimum restarts per key.
    spread = int(level.max() - level.min()) + 1
    lowest = np.minimum.accumulate(level - spread * group) + spread * group
    after_sorted = level - np.minimum(lowest, 0)
    before_sorted = np.where(new_key, opening[order], np.r_[0, after_sorted[:-1]])
    before, after = np.empty_like(level), np.empty_like(level)
    before[order], after[order] = before_sorted, after_sorted
    return before, after


def quoted(text: pl.Series) -> pl.Series:
    """JSON string literals (the generated values contain no quotes or backslashes)."""
    return pl.select(pl.concat_str([pl.lit('"'), text, pl.lit('"')])).to_series()


class InventoryProfile(Profile):
    """Columns hold JSON literals (`"HAM"`, `-3`, `null`) so one line can carry a wrongly typed value."""

    format = "jsonl"

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        warehouses = len(self.allowed("warehouse"))
        # Stock per warehouse x product, carried from chunk to chunk and file to file.
        self.stock = opening_stock(np.arange(warehouses * (PRODUCTS + 1), dtype=np.int64))

    @property
    def schema(self) -> Mapping[str, pl.DataType]:
        names = [
            "movement_id",
            "moved_at",
            "warehouse",
            "product_sku",
            "movement_type",
            "quantity",
            "unit_cost",
            "on_hand_after",
        ]
        return dict.fromkeys(names, pl.String())

    def _build(
        self, rng: np.random.Generator, count: int, times: TimeSampler, first_id: int
    ) -> tuple[pl.DataFrame, int]:
        at = times(count)
        moved_at = render_instants(at, self.spec.timezone, "zulu")
        local = np.flatnonzero(rng.random(count) < OFFSET_SHARE)
        if local.size:
            moved_at = moved_at.scatter(
                local, render_instants(at[local], self.spec.timezone, "offset")
            )
        kind = rng.choice(3, size=count, p=[0.12, 0.78, 0.10])
        receipt_qty = 10 * rng.geometric(0.05, size=count)
        pick_qty = -rng.geometric(0.5, size=count)
        adjust_qty = rng.geometric(0.3, size=count) * rng.choice(np.array([-1, 1]), size=count)
        wanted = np.choose(kind, [receipt_qty, pick_qty, adjust_qty])
        sku = skewed(rng, count, PRODUCTS, 2.0)
        warehouse = self.choose(
            rng, "warehouse", {"HAM": 30, "MUC": 25, "BER": 25, "FRA": 20}, count
        )
        place = warehouse.cast(pl.Enum(self.allowed("warehouse"))).to_physical().to_numpy()
        keys = place.astype(np.int64) * (PRODUCTS + 1) + sku
        on_hand_before, on_hand = running_stock(keys, wanted, self.stock[keys])
        # The booked quantity is the change of stock (a pick takes at most what is there).
        quantity = on_hand - on_hand_before
        # Rows are in time order: the last row of each key leaves the stock the next rows see.
        last = count - 1 - np.unique(keys[::-1], return_index=True)[1]
        self.stock[keys[last]] = on_hand[last]
        # Picks move stock at its book value; only receipts and adjustments state a cost.
        unit_cost = money(unit_price_cents(sku) * 6 // 10).scatter(
            np.flatnonzero(kind == 1), "null"
        )
        types = ["receipt", "pick", "adjustment"]
        frame = pl.DataFrame(
            {
                "movement_id": quoted(padded_ids("MV-", first_id + np.arange(count), 9)),
                "moved_at": quoted(moved_at),
                "warehouse": quoted(warehouse),
                "product_sku": quoted(padded_ids("SKU-", sku, 5)),
                "movement_type": quoted(pl.Series(types).gather(pl.Series(kind))),
                "quantity": pl.Series(quantity).cast(pl.String),
                "unit_cost": unit_cost,
                "on_hand_after": pl.Series(on_hand).cast(pl.String),
            }
        )
        return frame, count

    def faults(self) -> list[Fault]:
        return [
            Fault("wrong_type", "quantity", pl.lit('"many"')),
            Fault("wrong_type", "moved_at", pl.lit('"yesterday"')),
            Fault("not_allowed", "warehouse", pl.lit('"XYZ"')),
            Fault("not_allowed", "movement_type", pl.lit('"transfer"')),
            Fault("out_of_range", "quantity", pl.lit("250000")),
            Fault("out_of_range", "unit_cost", pl.lit("-1.50")),
            Fault("missing", "movement_type", pl.lit("null")),
            Fault("missing", "warehouse", pl.lit("null")),
            Fault("out_of_range", "on_hand_after", pl.lit("-4")),
            Fault("wrong_type", "on_hand_after", pl.lit('"n/a"')),
        ]
