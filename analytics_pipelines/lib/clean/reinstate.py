"""Rows a superseded version had displaced win again.

When version V leaves clean (a correction superseded it), the primary keys it held are empty.
If older versions that are still current (loaded, not superseded) delivered rows for those keys,
V had displaced them; they were counted as `replaced` against their files and stay in raw. They
are rebuilt from raw here: the raw rows of those versions are checked by the rule engine like
any batch (`stage`), the staged rows of the vacated keys are kept, and the usual rule (newest
file version, then last line) picks the winner (merge_stage, which also records their business
time as touched for the KPIs).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean import ledger as book
from analytics_pipelines.lib.clean.merge import MergeOutcome, merge_stage
from analytics_pipelines.lib.clean.schema import raw_columns
from analytics_pipelines.lib.clean.stage import OK, RawInput, build_stage, raw_input_table
from analytics_pipelines.lib.tables import FILE_ID, LINE, RAW_SCHEMA, quarantine_rows


def reinstate_vacated(conn: Connection, source: SourceSpec, vacated: sa.Table) -> MergeOutcome:
    """Fill the keys in `vacated` from the raw rows of current, cleaned versions; count them.

    Only versions with replaced rows can hold a displaced row; rows in quarantine failed their
    rules and stay there. Versions not cleaned yet are merged by the clean run itself.
    """
    live = raw_columns(conn, source)
    pk = list(source.primary_key)
    if live is None or any(k not in live for k in pk):
        return MergeOutcome()
    holders = book.versions_with_replaced_rows(conn, source.name)
    if not holders:
        return MergeOutcome()
    raw = raw_input_table(RAW_SCHEMA, source.name, live)
    where = sa.and_(
        raw.c[FILE_ID].in_(holders),
        ~sa.exists().where(
            quarantine_rows.c.source == source.name,
            quarantine_rows.c.file_id == raw.c[FILE_ID],
            quarantine_rows.c.line == raw.c[LINE],
        ),
    )
    stage = build_stage(conn, source, RawInput(raw, [c.name for c in raw.columns][:-2], where))
    # Only the keys that lost their clean row compete again (keys compare typed).
    conn.execute(
        sa.delete(stage).where(
            sa.or_(
                sa.not_(stage.c[OK]),
                ~sa.exists().where(*(vacated.c[k] == stage.c[k] for k in pk)),
            )
        )
    )
    outcome = merge_stage(conn, source, stage)
    # The clean run stages its own batch under the same name next.
    stage.drop(conn)
    for file_id, count in outcome.landed.items():
        book.shift(conn, file_id, clean=count, replaced=-count)
    for file_id, count in outcome.displaced.items():
        book.shift(conn, file_id, clean=-count, replaced=count)
    return outcome
