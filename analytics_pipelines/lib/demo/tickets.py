"""Demo `support_tickets`: help-desk tickets as typed Parquet (timestamps in UTC)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from analytics_pipelines.lib.demo.profile import Fault, Profile, TimeSampler, skewed
from analytics_pipelines.lib.demo.text import padded_ids

_SCHEMA: dict[str, pl.DataType] = {
    "ticket_id": pl.String(),
    "opened_at": pl.Datetime("us", "UTC"),
    "opened_on": pl.Date(),
    "customer_id": pl.String(),
    "channel": pl.String(),
    "priority": pl.String(),
    "resolved": pl.Boolean(),
    "resolution_minutes": pl.Int64(),
    "satisfaction": pl.Int64(),
}


class TicketsProfile(Profile):
    format = "parquet"

    @property
    def schema(self) -> Mapping[str, pl.DataType]:
        return _SCHEMA

    def _build(
        self, rng: np.random.Generator, count: int, times: TimeSampler, first_id: int
    ) -> tuple[pl.DataFrame, int]:
        opened_at = pl.from_epoch(pl.Series(times(count)), time_unit="s").dt.replace_time_zone(
            "UTC"
        )
        priority = self.choose(
            rng, "priority", {"low": 30, "normal": 50, "high": 15, "urgent": 5}, count
        )
        resolved = rng.random(count) < 0.8
        # Urgent tickets are worked first: shorter resolution times.
        scale = np.where(priority.to_numpy() == "urgent", 60.0, 240.0)
        minutes = np.rint(rng.lognormal(0.0, 0.9, size=count) * scale).astype(np.int64)
        answered = resolved & (rng.random(count) < 0.6)
        score = rng.choice(np.arange(1, 6), size=count, p=[0.06, 0.08, 0.16, 0.35, 0.35])
        customer = padded_ids("C", skewed(rng, count, 60_000, 2.5), 6).scatter(
            np.flatnonzero(rng.random(count) < 0.08), None
        )
        frame = pl.DataFrame(
            {
                "ticket_id": padded_ids("TCK-", first_id + np.arange(count), 8),
                "opened_at": opened_at.dt.cast_time_unit("us"),
                "opened_on": opened_at.dt.date(),
                "customer_id": customer,
                "channel": self.choose(rng, "channel", {"email": 5, "phone": 2, "chat": 3}, count),
                "priority": priority,
                "resolved": pl.Series(resolved),
                "resolution_minutes": pl.Series(minutes).scatter(np.flatnonzero(~resolved), None),
                "satisfaction": pl.Series(score).scatter(np.flatnonzero(~answered), None),
            },
            schema=_SCHEMA,
        )
        return frame, count

    def faults(self) -> list[Fault]:
        return [
            Fault("not_allowed", "channel", pl.lit("fax")),
            Fault("not_allowed", "priority", pl.lit("critical")),
            Fault("out_of_range", "satisfaction", pl.lit(9, dtype=pl.Int64)),
            Fault("out_of_range", "resolution_minutes", pl.lit(-30, dtype=pl.Int64)),
            Fault("missing", "priority", pl.lit(None, dtype=pl.String)),
            Fault("missing", "opened_on", pl.lit(None, dtype=pl.Date)),
        ]

    def revise(self, frame: pl.DataFrame) -> pl.DataFrame:
        # A ticket re-exported later has usually been resolved meanwhile.
        return frame.with_columns(
            resolution_minutes=pl.col("resolution_minutes").fill_null(480),
            resolved=pl.lit(True),
        )
