"""Which KPI partitions a load touched: `ingest.touched_periods` slots mapped to local dates.

The clean layer records every 15-minute UTC slot of business time a file version touched (both
versions of a corrected file). Each slot is mapped, in SQL, to the local date of its first and
last instant in each KPI time zone, so a zone with a 45-minute offset is handled too.

Progress is kept per source (`SensorCursor`), never as one id across sources: two loads of
different sources commit in any order, so a row with a lower id can become visible after a row
with a higher one, and a single "last id seen" would skip it forever. Within one source that
cannot happen: every writer of `ingest.touched_periods` (`clean.merge.merge_stage` and
`clean.merge.remove_files_from_clean`, called from `clean.process.clean_pending`,
`clean.replay.replay_quarantine` and `clean.replay.rebuild_clean`, and
`clean.reference_changes`, which records the slots of a fact source when a reference it looks
up changes) first takes `clean.ledger.lock_source`, a transaction-level advisory lock on
`clean:<source>` held until commit, and the identity column draws ids one at a time (no sequence cache, migration 0001).
So a writer of a source gets its ids only after the previous writer of that source committed:
within a source, ids become visible in increasing order.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.kpi.periods import Calendar, window_last_day
from analytics_pipelines.lib.kpi.plan import KpiPlan, kpi_sources

# Bounds the work of one sensor tick per source; a bigger backlog is worked off over later ticks.
DEFAULT_BATCH_ROWS = 100_000
# How long a requested KPI run may wait in the queue and still be refreshed again after a block.
REQUEUE_WINDOW_SECONDS = 6 * 3600


class CursorError(ValueError):
    """A stored sensor cursor that is neither an id nor a per-source cursor."""


@dataclass(frozen=True)
class SensorCursor:
    """The last `touched_periods.id` consumed, per source.

    `floor` stands for every source not listed: a cursor written before cursors were per source
    (a bare integer) means "all sources up to that id".

    `held` are the sources whose KPIs a failing blocking check held at the last tick, and
    `requested` the (epoch seconds, id the batch started after) of each source's recent ticks
    that requested runs. A run requested just before a block may start after it and be refused
    by the KPI asset; so when a source becomes blocked its cursor goes back to the start of the
    batches it requested within `REQUEUE_WINDOW_SECONDS`, and those periods are refreshed again
    (idempotently) with the held ones once the check passes.
    """

    floor: int = 0
    sources: Mapping[str, int] = field(default_factory=dict)
    held: frozenset[str] = frozenset()
    requested: Mapping[str, tuple[tuple[float, int], ...]] = field(default_factory=dict)

    def after(self, source: str) -> int:
        return self.sources.get(source, self.floor)

    def advanced(self, upto: Mapping[str, int]) -> SensorCursor:
        merged = dict(self.sources)
        for source, last in upto.items():
            merged[source] = max(last, self.after(source))
        return replace(self, sources=merged)

    def holding(self, held: set[str], now: float) -> SensorCursor:
        """`held` are blocked now: a source newly blocked goes back over its recent requests."""
        merged = dict(self.sources)
        since = now - REQUEUE_WINDOW_SECONDS
        for source in held - self.held:
            starts = [after for at, after in self.requested.get(source, ()) if at >= since]
            if starts:
                merged[source] = min([*starts, self.after(source)])
        return replace(self, sources=merged, held=frozenset(held))

    def with_requests(self, started_after: Mapping[str, int], now: float) -> SensorCursor:
        """Remember the batches requested at `now` (id each started after), per source."""
        since = now - REQUEUE_WINDOW_SECONDS
        recent = {
            source: tuple(e for e in entries if e[0] >= since)
            for source, entries in self.requested.items()
        }
        for source, after in started_after.items():
            recent[source] = (*recent.get(source, ()), (now, after))
        return replace(self, requested={s: e for s, e in recent.items() if e})

    def serialise(self) -> str:
        data: dict[str, object] = {"floor": self.floor, "sources": dict(self.sources)}
        if self.held:
            data["held"] = sorted(self.held)
        if self.requested:
            data["requested"] = {s: [list(e) for e in v] for s, v in self.requested.items()}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def parse(cls, text: str | None) -> SensorCursor:
        if not text or not text.strip():
            return cls()
        text = text.strip()
        if text.lstrip("-").isdigit():
            return cls(floor=int(text))
        try:
            data = json.loads(text)
            floor = data.get("floor", 0)
            sources = data.get("sources", {})
            held = data.get("held", [])
            requested = {
                str(source): tuple((float(at), int(after)) for at, after in entries)
                for source, entries in data.get("requested", {}).items()
            }
            valid = (
                isinstance(floor, int)
                and isinstance(sources, dict)
                and all(isinstance(k, str) and isinstance(v, int) for k, v in sources.items())
                and isinstance(held, list)
                and all(isinstance(h, str) for h in held)
            )
        except (ValueError, AttributeError, TypeError):
            valid = False
        if not valid:
            raise CursorError(
                f"KPI sensor cursor {text[:200]!r} is invalid: expected an integer id or "
                '{"floor": <id>, "sources": {"<source>": <id>, ...}}'
            )
        return cls(floor, dict(sources), frozenset(held), requested)


@dataclass(frozen=True)
class TouchedDates:
    upto: dict[str, int] = field(default_factory=dict)  # highest id read, per source with news
    dates: dict[tuple[str, str], set[dt.date]] = field(default_factory=dict)  # (source, tz)


_LAST_IDS = sa.text(
    """
    SELECT c.source, max(b.id)
    FROM unnest(CAST(:sources AS text[]), CAST(:afters AS bigint[])) AS c(source, after)
    CROSS JOIN LATERAL (
        SELECT t.id FROM ingest.touched_periods AS t
        WHERE t.source = c.source AND t.id > c.after
        ORDER BY t.id LIMIT :limit
    ) AS b
    GROUP BY c.source
    """
)

_LOCAL_DATES = sa.text(
    """
    SELECT DISTINCT z.source, z.tz, d.day
    FROM unnest(CAST(:sources AS text[]), CAST(:zones AS text[]),
                CAST(:afters AS bigint[]), CAST(:uptos AS bigint[])) AS z(source, tz, after, upto)
    JOIN ingest.touched_periods AS t
      ON t.source = z.source AND t.id > z.after AND t.id <= z.upto
    CROSS JOIN LATERAL (VALUES
        (CAST(timezone(z.tz, t.slot_start) AS date)),
        (CAST(timezone(z.tz, t.slot_start + interval '15 minutes' - interval '1 microsecond')
              AS date))
    ) AS d(day)
    """
)


def touched_dates(
    conn: Connection,
    zones_by_source: Mapping[str, set[str]],
    cursor: SensorCursor,
    limit: int = DEFAULT_BATCH_ROWS,
) -> TouchedDates:
    """Local dates touched after the cursor, per (source, time zone) of interest."""
    sources = sorted(zones_by_source)
    if not sources:
        return TouchedDates()
    found = conn.execute(
        _LAST_IDS,
        {"sources": sources, "afters": [cursor.after(s) for s in sources], "limit": limit},
    ).all()
    upto = {str(source): int(last) for source, last in found if last is not None}
    pairs = sorted((s, z) for s in upto for z in zones_by_source[s])
    dates: dict[tuple[str, str], set[dt.date]] = defaultdict(set)
    if pairs:
        rows = conn.execute(
            _LOCAL_DATES,
            {
                "sources": [s for s, _ in pairs],
                "zones": [z for _, z in pairs],
                "afters": [cursor.after(s) for s, _ in pairs],
                "uptos": [upto[s] for s, _ in pairs],
            },
        )
        for source, zone, day in rows:
            dates[(source, zone)].add(day)
    return TouchedDates(upto, dict(dates))


def refreshed_days(
    plans: Mapping[str, KpiPlan], name: str, source: str, days: set[dt.date], today: dt.date
) -> set[dt.date]:
    """The local days (up to `today`) whose stored values of KPI `name` change when clean rows
    of `source` on `days` change.

    A per-period KPI: the days themselves (each refresh rewrites their weeks, months, … too). A
    window KPI: every day whose window contains one of them, the next N-1 days of a rolling
    window, the rest of the month, quarter or year of a to-date total (`all`: up to today). A
    derived KPI: the days of those of its inputs computed from `source`.
    """
    plan = plans[name]
    if plan.derived is not None:
        changed: set[dt.date] = set()
        for ref in plan.inputs:
            if ref in plans and source in {s.name for s in kpi_sources(plans, ref)}:
                changed |= refreshed_days(plans, ref, source, days, today)
        return changed
    window = plan.kpi.window
    current = {d for d in days if d <= today}
    if window is None:
        return current
    changed = set()
    for day in current:
        reach = min(window_last_day(window, day, Calendar.of(plan.kpi)) or today, today)
        changed.update(day + dt.timedelta(days=i) for i in range((reach - day).days + 1))
    return changed


def refresh_reason(
    plans: Mapping[str, KpiPlan], names: list[str], touched: set[dt.date], days: set[dt.date]
) -> str:
    """Why a sensor run rewrites `days` of `names`: the touched days, and the windows that
    reach beyond them."""
    first, last = min(touched), max(touched)
    said = f"rows of {first}" + (f"..{last}" if last != first else "") + " changed"
    windows = sorted(
        f"{n} ({window.describe()})" for n in names if (window := plans[n].kpi.window) is not None
    )
    if days == touched or not days:
        return said
    reach = f"; their windows reach {min(days)}..{max(days)}"
    return said + reach + (f": {', '.join(windows)}" if windows else " (derived from window KPIs)")
