"""Which KPI partitions a load touched: `ingest.touched_periods` slots mapped to local dates.

The clean layer records every 15-minute UTC slot of business time a file version touched (both
versions of a corrected file). Each slot is mapped, in SQL, to the local date of its first and
last instant in each KPI time zone, so a zone with a 45-minute offset is handled too.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# Bounds the work of one sensor tick; a bigger backlog is worked off over the following ticks.
DEFAULT_BATCH_ROWS = 100_000


@dataclass(frozen=True)
class TouchedDates:
    upto_id: int | None  # highest touched_periods.id read (the next cursor); None: nothing new
    dates: dict[tuple[str, str], set[dt.date]] = field(default_factory=dict)  # (source, tz)


_LAST_ID = sa.text(
    "SELECT max(id) FROM (SELECT id FROM ingest.touched_periods "
    "WHERE id > :after ORDER BY id LIMIT :limit) AS batch"
)

_LOCAL_DATES = sa.text(
    """
    SELECT DISTINCT z.source, z.tz, d.day
    FROM ingest.touched_periods AS t
    JOIN unnest(CAST(:sources AS text[]), CAST(:zones AS text[])) AS z(source, tz)
      ON z.source = t.source
    CROSS JOIN LATERAL (VALUES
        (CAST(timezone(z.tz, t.slot_start) AS date)),
        (CAST(timezone(z.tz, t.slot_start + interval '15 minutes' - interval '1 microsecond')
              AS date))
    ) AS d(day)
    WHERE t.id > :after AND t.id <= :upto
    """
)


def touched_dates(
    conn: Connection,
    zones_by_source: dict[str, set[str]],
    after_id: int,
    limit: int = DEFAULT_BATCH_ROWS,
) -> TouchedDates:
    """Local dates touched after `after_id`, per (source, time zone) of interest."""
    upto = conn.execute(_LAST_ID, {"after": after_id, "limit": limit}).scalar()
    if upto is None:
        return TouchedDates(None)
    pairs = sorted((s, z) for s, zones in zones_by_source.items() for z in zones)
    dates: dict[tuple[str, str], set[dt.date]] = defaultdict(set)
    if pairs:
        rows = conn.execute(
            _LOCAL_DATES,
            {
                "sources": [s for s, _ in pairs],
                "zones": [z for _, z in pairs],
                "after": after_id,
                "upto": upto,
            },
        )
        for source, zone, day in rows:
            dates[(source, zone)].add(day)
    return TouchedDates(int(upto), dict(dates))
