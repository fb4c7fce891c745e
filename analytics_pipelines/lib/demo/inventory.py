"""Demo `inventory_movements`: stock receipts, picks and adjustments, JSON lines, UTC or offset times."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

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


def quoted(text: pl.Series) -> pl.Series:
    """JSON string literals (the generated values contain no quotes or backslashes)."""
    return pl.select(pl.concat_str([pl.lit('"'), text, pl.lit('"')])).to_series()


class InventoryProfile(Profile):
    """Columns hold JSON literals (`"HAM"`, `-3`, `null`) so one line can carry a wrongly typed value."""

    format = "jsonl"

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
        quantity = np.choose(kind, [receipt_qty, pick_qty, adjust_qty])
        sku = skewed(rng, count, 5_000, 2.0)
        # Picks move stock at its book value; only receipts and adjustments state a cost.
        unit_cost = money(unit_price_cents(sku) * 6 // 10).scatter(
            np.flatnonzero(kind == 1), "null"
        )
        types = ["receipt", "pick", "adjustment"]
        frame = pl.DataFrame(
            {
                "movement_id": quoted(padded_ids("MV-", first_id + np.arange(count), 9)),
                "moved_at": quoted(moved_at),
                "warehouse": quoted(
                    self.choose(
                        rng, "warehouse", {"HAM": 30, "MUC": 25, "BER": 25, "FRA": 20}, count
                    )
                ),
                "product_sku": quoted(padded_ids("SKU-", sku, 5)),
                "movement_type": quoted(pl.Series(types).gather(pl.Series(kind))),
                "quantity": pl.Series(quantity).cast(pl.String),
                "unit_cost": unit_cost,
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
        ]
