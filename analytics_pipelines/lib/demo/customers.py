"""Demo `customers`: the customer master (a reference source), CSV, one row per customer.

Customer numbers count up from C000001 in signup order, the same numbers the orders and tickets
draw (small numbers, the oldest customers, order most). A customer re-sent in a later file has
usually grown into the next segment: the reference changes, and the KPIs sliced by
`customer.segment` move that customer's past orders with it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from analytics_pipelines.lib.demo.profile import Fault, Profile, TimeSampler
from analytics_pipelines.lib.demo.text import padded_ids

NEXT_SEGMENT = {"consumer": "small_business", "small_business": "enterprise"}


class CustomersProfile(Profile):
    format = "csv"

    @property
    def schema(self) -> Mapping[str, pl.DataType]:
        return dict.fromkeys(["customer_id", "segment", "country", "signed_up_on"], pl.String())

    def _build(
        self, rng: np.random.Generator, count: int, times: TimeSampler, first_id: int
    ) -> tuple[pl.DataFrame, int]:
        signed_up = (
            pl.from_epoch(pl.Series(times(count)), time_unit="s")
            .dt.replace_time_zone("UTC")
            .dt.convert_time_zone(self.spec.timezone)
            .dt.date()
        )
        frame = pl.DataFrame(
            {
                "customer_id": padded_ids("C", first_id + np.arange(count), 6),
                "segment": self.choose(
                    rng, "segment", {"consumer": 70, "small_business": 25, "enterprise": 5}, count
                ),
                "country": self.choose(rng, "country", {"DE": 60, "AT": 15, "CH": 15}, count),
                "signed_up_on": signed_up.dt.strftime("%Y-%m-%d"),
            }
        )
        return frame, count

    def faults(self) -> list[Fault]:
        return [
            Fault("not_allowed", "segment", pl.lit("gold")),
            Fault("missing", "segment", pl.lit(None, dtype=pl.String)),
            Fault("pattern", "customer_id", pl.col("customer_id").str.replace("C", "K")),
            Fault("wrong_type", "signed_up_on", pl.lit("yesterday")),
        ]

    def revise(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(segment=pl.col("segment").replace(NEXT_SEGMENT))
