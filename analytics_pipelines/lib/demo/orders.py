"""Demo `orders`: web-shop and store order lines, CSV, naive Europe/Berlin timestamps mostly."""

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
from analytics_pipelines.lib.demo.text import int_text, money, padded_ids
from analytics_pipelines.lib.demo.timefmt import render_instants

# Partner systems send ISO timestamps with an offset; the shop and stores send local wall clock.
OFFSET_SHARE = 0.08
UTC_SHARE_OF_OFFSET = 0.5


PRODUCTS = 5_000


class OrdersProfile(Profile):
    format = "csv"

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self._separator = spec.reader.decimal_separator
        catalogue = np.arange(1, PRODUCTS + 1)
        self._skus = padded_ids("SKU-", catalogue, 5)
        self._prices = money(unit_price_cents(catalogue), self._separator)

    @property
    def schema(self) -> Mapping[str, pl.DataType]:
        names = [
            "order_id",
            "line_no",
            "ordered_at",
            "customer_id",
            "region",
            "channel",
            "product_sku",
            "quantity",
            "unit_price",
            "discount",
            "status",
        ]
        return dict.fromkeys(names, pl.String())

    def _build(
        self, rng: np.random.Generator, count: int, times: TimeSampler, first_id: int
    ) -> tuple[pl.DataFrame, int]:
        lines = 1 + rng.binomial(4, 0.25, size=count)
        ends = np.cumsum(lines)
        orders = int(np.searchsorted(ends, count)) + 1
        starts = ends[:orders] - lines[:orders]
        order_of_row = np.repeat(np.arange(orders), lines[:orders])[:count]
        line_no = np.arange(count) - starts[order_of_row] + 1

        at = times(orders)
        ordered_at = render_instants(at, self.spec.timezone, "naive")
        with_offset = np.flatnonzero(rng.random(orders) < OFFSET_SHARE)
        in_utc = rng.random(with_offset.size) < UTC_SHARE_OF_OFFSET
        for subset, zone in (
            (with_offset[~in_utc], self.spec.timezone),
            (with_offset[in_utc], "UTC"),
        ):
            if subset.size:
                ordered_at = ordered_at.scatter(subset, render_instants(at[subset], zone, "offset"))

        channel = self.choose(rng, "channel", {"web": 6, "store": 3, "partner": 1}, orders)
        channel = channel.scatter(np.flatnonzero(rng.random(orders) < 0.02), None)
        per_order = pl.DataFrame(
            {
                "order_id": padded_ids("ORD-", first_id + np.arange(orders), 8),
                "ordered_at": ordered_at,
                "customer_id": padded_ids("C", skewed(rng, orders, 60_000, 2.5), 6),
                "region": self.choose(
                    rng, "region", {"north": 30, "south": 25, "east": 20, "west": 25}, orders
                ),
                "channel": channel,
            }
        ).gather(pl.Series(order_of_row))

        sku = skewed(rng, count, PRODUCTS, 2.0)
        quantity = rng.geometric(0.55, size=count)
        discounted = np.flatnonzero(rng.random(count) < 0.25)
        rate = rng.choice(np.array([5, 10, 15, 20]), size=discounted.size)
        price = unit_price_cents(sku[discounted])
        discount = pl.Series("discount", [None] * count, dtype=pl.String).scatter(
            discounted, money(price * quantity[discounted] * rate // 100, self._separator)
        )
        frame = per_order.with_columns(
            line_no=int_text(line_no),
            product_sku=self._skus.gather(pl.Series(sku - 1)),
            quantity=int_text(quantity),
            unit_price=self._prices.gather(pl.Series(sku - 1)),
            discount=discount,
            status=self.choose(
                rng,
                "status",
                {"placed": 50, "shipped": 38, "returned": 5, "cancelled": 7},
                count,
            ),
        )
        return frame, orders

    def faults(self) -> list[Fault]:
        return [
            Fault("wrong_type", "quantity", pl.lit("two")),
            Fault("wrong_type", "unit_price", pl.lit("12.99 EUR")),
            Fault("wrong_type", "ordered_at", pl.lit("31.02.2026 14:00")),
            Fault("not_allowed", "region", pl.lit("central")),
            Fault("not_allowed", "status", pl.lit("lost")),
            Fault("out_of_range", "quantity", pl.lit("0")),
            Fault("out_of_range", "unit_price", pl.lit("-4.99")),
            Fault(
                "pattern", "order_id", pl.col("order_id").str.replace("ORD-", "ORD", literal=True)
            ),
            Fault("missing", "customer_id", pl.lit(None, dtype=pl.String)),
            Fault("missing", "product_sku", pl.lit(None, dtype=pl.String)),
        ]

    def revise(self, frame: pl.DataFrame) -> pl.DataFrame:
        # Re-sent order lines usually carry the next status of the order.
        return frame.with_columns(
            status=pl.when(pl.col("status") == "placed")
            .then(pl.lit("shipped"))
            .otherwise(pl.col("status"))
        )
