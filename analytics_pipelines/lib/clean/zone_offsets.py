"""Wall times of a zone → UTC instants, exactly as PostgreSQL's timestamptz input reads them.

PostgreSQL has its own time zone database and its own rules for wall times that occur twice
or never (DST changes); a second implementation (polars' bundled tz database) can disagree
with it. So PostgreSQL is asked, once per distinct 15-minute wall slot: the wall text at the
slot's start and at its last microsecond, read as timestamptz in the source's zone. When both
have the same offset the whole slot has it; a slot with an offset change inside it (only
historic local-mean-time changes do that) is refused and the file goes to the SQL path.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Engine

SLOT = "15m"
# More distinct offsets in a batch than this (centuries of data) and a join beats the chain.
MAX_CHAINED_OFFSETS = 64

# Offsets in microseconds: an instant can lie past year 9999, which Python cannot hold.
_OFFSETS_OF_SLOTS = sa.text(
    "SELECT s,"
    " (extract(epoch FROM s - ((s::text)::timestamptz AT TIME ZONE 'UTC')) * 1e6)::bigint,"
    " (extract(epoch FROM e - ((e::text)::timestamptz AT TIME ZONE 'UTC')) * 1e6)::bigint"
    " FROM unnest(CAST(:slots AS timestamp[])) AS s,"
    " LATERAL (SELECT s + interval '15 minutes' - interval '1 microsecond') AS last(e)"
)


class AmbiguousSlot(Exception):
    """A 15-minute wall slot whose UTC offset changes within it."""


class ZoneOffsets:
    """UTC offsets PostgreSQL gives the wall times of one zone, looked up per slot, cached."""

    def __init__(self, engine: Engine, zone: str) -> None:
        self.engine = engine
        self.zone = zone
        self._known = pl.DataFrame(schema={"q": pl.Datetime("us"), "offset": pl.Duration("us")})

    def _lookup(self, slots: list[datetime]) -> pl.DataFrame:
        with self.engine.connect() as conn, conn.begin():
            conn.execute(sa.select(sa.func.set_config("TimeZone", self.zone, True)))
            rows = conn.execute(_OFFSETS_OF_SLOTS, {"slots": slots}).all()
        found = pl.DataFrame(
            rows,
            schema={"q": pl.Datetime("us"), "offset": pl.Int64, "end_offset": pl.Int64},
            orient="row",
        ).with_columns(pl.col("offset", "end_offset").cast(pl.Duration("us")))
        changing = found.filter(pl.col("offset") != pl.col("end_offset"))
        if changing.height:
            raise AmbiguousSlot(
                f"the UTC offset of {self.zone} changes within the wall times from"
                f" {changing.get_column('q')[0]}"
            )
        return found.select("q", "offset")

    def offsets(self, slots: pl.Series) -> pl.DataFrame:
        """(q, offset) for the distinct wall slots `slots` (Datetime, truncated to 15 min)."""
        wanted = pl.DataFrame({"q": slots.unique().drop_nulls()})
        missing = wanted.join(self._known, on="q", how="anti")
        if missing.height:
            found = self._lookup(missing.get_column("q").to_list())
            self._known = pl.concat([self._known, found]).sort("q")
        return wanted.join(self._known, on="q", how="left")

    def to_utc(self, wall: pl.Series) -> pl.Series:
        """Wall times of the zone (naive) → the UTC instants PostgreSQL reads (naive, UTC)."""
        frame = pl.DataFrame({"w": wall}).with_columns(q=pl.col("w").dt.truncate(SLOT))
        offsets = self.offsets(frame.get_column("q")).sort("q")
        # The offset changes a few times a year: one comparison per change beats a join.
        runs = offsets.filter(pl.col("offset").ne_missing(pl.col("offset").shift(1)))
        if runs.height > MAX_CHAINED_OFFSETS:
            joined = frame.join(offsets, on="q", how="left", maintain_order="left")
            return joined.select((pl.col("w") - pl.col("offset")).alias("t")).to_series()
        offset: pl.Expr = pl.lit(None, dtype=pl.Duration("us"))
        for start, value in runs.select("q", "offset").iter_rows():
            offset = (
                pl.when(pl.col("q") >= start)
                .then(pl.lit(value, dtype=pl.Duration("us")))
                .otherwise(offset)
            )
        return frame.select((pl.col("w") - offset).alias("t")).to_series()
