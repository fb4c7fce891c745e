"""The raw event-time text of a file summed up as the loader's business-date shortcut needs it.

`ingest.event_range`'s text query computed in polars over batches of raw text, for the readers
that see a file's bytes beside its raw COPY (the clean side, the raw load's date reader).
Outside both packages: the clean side fills it and hands it back through the seam
(`ingest.clean_seam`), so neither package imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass
class RawEventText:
    """Byte-order min and max of the raw event-time text, and whether any value carries a
    zone, folded in batch by batch."""

    low: str | None = None
    high: str | None = None
    zoned: bool = False
    seen: bool = False

    def add(self, frame: pl.DataFrame, name: str, plain: pl.Expr | None = None) -> None:
        """Fold in a batch's raw `name` values. `plain`, when given, marks rows known to be
        a plain wall time exactly as received: they carry no zone, so only the others are
        searched for one."""
        if name not in frame.columns:
            return
        self.seen = True
        text = pl.col(name)
        low, high = frame.select(text.min().alias("low"), text.max().alias("high")).row(0)
        unsure = frame if plain is None else frame.filter(~plain.fill_null(False))
        zoned = unsure.select(
            (
                text.str.contains("+", literal=True)
                | text.str.contains("Z", literal=True)
                | text.str.slice(10).str.contains("-", literal=True)
            ).any()
        ).item()
        self.low = low if self.low is None or (low is not None and low < self.low) else self.low
        self.high = (
            high if self.high is None or (high is not None and high > self.high) else self.high
        )
        self.zoned = self.zoned or bool(zoned)
