"""When a reference source changes, the periods of the fact rows that look it up are touched.

A KPI dimension `customer.segment` reads the current row of each customer, for past periods too.
So when a customer's row changes (another segment, a row added or removed), every period that
holds fact rows with that key must be recomputed, and only those. The clean transaction of the
reference copies its rows first (`ReferenceSnapshot.take`, a transaction-local table); at the
end `record` compares the two, set-based, keeps the keys whose row differs in any declared
column, joins them with each fact source's clean rows and records those rows' 15-minute
event-time slots in `ingest.touched_periods` under the fact source, attributed to the reference
file that made the change (or, for a key that went away, the file that had held it). The KPI
invalidation sensor then refreshes those partitions as it does for late data.

A reference file delivered again unchanged touches nothing. Each fact source's cleaner lock is
taken before its slots are recorded (the sensor relies on ids of one source becoming visible in
order, see lib/kpi/invalidation); a fact cleaner never takes a reference's lock, so the two
locks are always taken in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import LookupSpec, SourceSpec
from analytics_pipelines.lib.clean.ledger import lock_source
from analytics_pipelines.lib.clean.merge import slot_of
from analytics_pipelines.lib.logging import get_logger
from analytics_pipelines.lib.tables import (
    FILE_ID,
    SQL_TYPES,
    clean_table,
    temporary_table,
    touched_periods,
)

log = get_logger(__name__)

LookupUses = Sequence[tuple[SourceSpec, LookupSpec]]


def _typed(source: SourceSpec, names: Sequence[str]) -> list[sa.Column]:
    return [sa.Column(name, SQL_TYPES[source.column(name).type]) for name in names]


@dataclass(frozen=True)
class ReferenceSnapshot:
    """The rows of a reference's clean table as they were when its clean transaction began."""

    source: SourceSpec
    uses: LookupUses
    before: sa.Table

    @classmethod
    def take(
        cls, conn: Connection, source: SourceSpec, uses: LookupUses
    ) -> ReferenceSnapshot | None:
        """Copy `clean.<reference>` (call after the table exists); None when nothing looks it up."""
        if source.kind != "reference" or not uses:
            return None
        names = [c.name for c in source.columns]
        before = temporary_table(
            "_reference_before", *_typed(source, names), sa.Column(FILE_ID, sa.BigInteger)
        )
        before.create(conn)
        clean = clean_table(source)
        conn.execute(
            before.insert().from_select(
                [*names, FILE_ID], sa.select(*(clean.c[n] for n in [*names, FILE_ID]))
            )
        )
        return cls(source, uses, before)

    def record(self, conn: Connection) -> list[str]:
        """Record the touched slots of every fact source; one line per fact source saying so."""
        source, before = self.source, self.before
        clean = clean_table(source)
        pk = list(source.primary_key)
        data = [c.name for c in source.columns if c.name not in pk]
        changed = temporary_table(
            "_reference_changed", *_typed(source, pk), sa.Column("cause", sa.BigInteger)
        )
        changed.create(conn)
        differs = sa.or_(
            clean.c[pk[0]].is_(None),
            before.c[pk[0]].is_(None),
            *(
                [
                    sa.tuple_(*(clean.c[n] for n in data)).is_distinct_from(
                        sa.tuple_(*(before.c[n] for n in data))
                    )
                ]
                if data
                else []
            ),
        )
        keys = conn.execute(
            changed.insert().from_select(
                [*pk, "cause"],
                sa.select(
                    *(sa.func.coalesce(clean.c[k], before.c[k]) for k in pk),
                    sa.func.coalesce(clean.c[FILE_ID], before.c[FILE_ID]),
                )
                .select_from(
                    clean.join(before, sa.and_(*(clean.c[k] == before.c[k] for k in pk)), full=True)
                )
                .where(differs),
            )
        ).rowcount
        if not keys:
            return []
        messages = []
        for fact, lookup in sorted(self.uses, key=lambda use: (use[0].name, use[1].name)):
            exists = conn.execute(
                sa.select(sa.func.to_regclass(f'"clean"."{fact.name}"').is_not(None))
            ).scalar_one()
            if not exists:
                continue
            lock_source(conn, fact.name)
            rows = clean_table(fact)
            event = rows.c[fact.event_column]
            on = [rows.c[column] == changed.c[key] for column, key in lookup.key.items()]
            slots = conn.execute(
                sa.insert(touched_periods).from_select(
                    ["source", "file_id", "slot_start"],
                    sa.select(sa.literal(fact.name, sa.Text), changed.c.cause, slot_of(event, fact))
                    .select_from(rows.join(changed, sa.and_(*on)))
                    .where(event.is_not(None))
                    .distinct(),
                )
            ).rowcount
            messages.append(
                f"reference {source.name} changed for {keys} key{'s' if keys != 1 else ''}: "
                f"{slots} touched 15-minute "
                f"slots of {fact.name} recorded (lookup {lookup.name}); the KPIs of "
                f"{fact.name} refresh those periods"
            )
        for message in messages:
            log.info("reference changed", source=source.name, detail=message)
        return messages
