"""What the landing sensor does on one tick: bounded listings, compared against the ledger.

The cursor keeps two positions in key order:
* `after`: a sweep that walks the prefix one page per tick and wraps around at the end, so
  corrected objects (same key, new etag) are found however early their key sorts;
* `high`: once a full pass is done, the highest key seen; every tick also lists the page after
  it, so new objects with ever-growing keys (dates, sequence numbers) are found at once.
Each tick therefore lists at most two pages, whatever the size of the prefix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest import ledger
from analytics_pipelines.lib.ingest.objects import is_candidate
from analytics_pipelines.lib.storage import ObjectInfo, ObjectStore
from analytics_pipelines.lib.warehouse import Warehouse

DEFAULT_PAGE_SIZE = 1000


@dataclass(frozen=True)
class LandingCursor:
    after: str | None = None
    high: str | None = None
    pass_high: str | None = None
    passes: int = 0

    @classmethod
    def parse(cls, text: str | None) -> LandingCursor:
        if not text:
            return cls()
        try:
            values = json.loads(text)
            return cls(
                **{k: values.get(k) for k in ("after", "high", "pass_high")},
                passes=int(values.get("passes", 0)),
            )
        except (ValueError, TypeError, AttributeError):
            # An unreadable cursor (e.g. from an older version) restarts the sweep; the
            # ledger keeps that from loading anything twice.
            return cls()

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class TickPlan:
    new: list[ObjectInfo]
    cursor: LandingCursor
    listed: int
    # Per new key, the ledger state it was compared with: the same (key, etag) can be new again
    # later (a rollback, an operator's retry), and its run must then get a key of its own.
    basis: dict[str, str] = field(default_factory=dict)

    @property
    def run_key(self) -> str:
        digest = hashlib.sha256(
            "\n".join(f"{i.key}\t{i.etag}\t{self.basis.get(i.key, '')}" for i in self.new).encode(
                "utf-8"
            )
        ).hexdigest()
        return f"{len(self.new)}-{digest[:24]}"


def _max(*keys: str | None) -> str | None:
    present = [k for k in keys if k is not None]
    return max(present) if present else None


def plan_tick(
    source: SourceSpec,
    store: ObjectStore,
    warehouse: Warehouse,
    cursor: LandingCursor,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> TickPlan:
    """New (key, etag) versions seen by this tick's bounded listings, and the next cursor."""
    prefix = source.landing_prefix
    sweep = store.list(prefix, start_after=cursor.after, limit=page_size)
    tail = store.list(prefix, start_after=cursor.high, limit=page_size) if cursor.high else []
    pass_high = _max(cursor.pass_high, sweep[-1].key if sweep else None)
    high = _max(cursor.high, tail[-1].key if tail else None)
    if len(sweep) < page_size:
        following = LandingCursor(
            after=None, high=_max(high, pass_high), pass_high=None, passes=cursor.passes + 1
        )
    else:
        following = LandingCursor(
            after=sweep[-1].key, high=high, pass_high=pass_high, passes=cursor.passes
        )
    seen = {(i.key, i.etag): i for i in [*sweep, *tail] if is_candidate(i.key)}
    with warehouse.connect() as conn:
        current = ledger.current_versions(conn, source.name, {k for k, _ in seen})
    new = [
        seen[(key, etag)]
        for key, etag in sorted(seen)
        if key not in current or not current[key].settles(etag)
    ]
    basis = {i.key: current[i.key].marker for i in new if i.key in current}
    return TickPlan(new=new, cursor=following, listed=len(sweep) + len(tail), basis=basis)
