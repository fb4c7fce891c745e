"""How many rows a warehouse table holds: the `dagster/row_count` of the raw and clean assets.

Exact when it is cheap: `count(*)` under a statement timeout (a parallel or index-only scan of
a table of millions of rows finishes well inside it). A table too big to count in that time
gets PostgreSQL's planner estimate (`pg_class.reltuples`, as of the last VACUUM or ANALYZE),
reported as an estimate under a key of its own, never as the exact count. Maintaining a running
total instead would mean every path that inserts or deletes rows (loads, retries, corrections,
replays, retention) keeping it in step; a count cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from analytics_pipelines.lib.warehouse import Warehouse

COUNT_TIMEOUT_MS = 1_000  # bounded: it is paid by every load run, which a dropped file waits for
QUERY_CANCELED = "57014"  # SQLSTATE of a statement stopped by statement_timeout
ROW_COUNT_KEY = "dagster/row_count"  # Dagster's standard key: shown as "Row count"
ESTIMATE_KEY = "table_rows_estimate"


@dataclass(frozen=True)
class TableRows:
    table: str
    exact: int | None
    estimate: int | None = None  # only when the exact count was too slow

    def metadata(self) -> dict[str, int]:
        if self.exact is not None:
            return {ROW_COUNT_KEY: self.exact}
        return {} if self.estimate is None else {ESTIMATE_KEY: self.estimate}


# The table's planner statistics; no row when the table does not exist (yet).
RELATION = sa.text(
    "SELECT c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = :schema AND c.relname = :name AND c.relkind IN ('r', 'p')"
)


def table_rows(
    warehouse: Warehouse, schema: str, name: str, *, timeout_ms: int = COUNT_TIMEOUT_MS
) -> TableRows:
    """The rows of `schema.name` now (0 for a table not created yet)."""
    label = f"{schema}.{name}"
    names = {"schema": schema, "name": name}
    with warehouse.connect() as conn:
        if conn.execute(RELATION, names).first() is None:
            return TableRows(label, exact=0)
    try:
        with warehouse.begin() as conn:
            conn.execute(
                sa.text("SELECT set_config('statement_timeout', :ms, true)"),
                {"ms": str(timeout_ms)},
            )
            count = conn.execute(
                sa.select(sa.func.count()).select_from(sa.table(name, schema=schema))
            ).scalar_one()
        return TableRows(label, exact=int(count))
    except sa.exc.OperationalError as error:
        if getattr(error.orig, "pgcode", None) != QUERY_CANCELED:
            raise
    with warehouse.connect() as conn:
        estimate = conn.execute(RELATION, names).scalar()
    # -1: never vacuumed or analysed, so PostgreSQL has no estimate either.
    if estimate is None or estimate < 0:
        return TableRows(label, exact=None)
    return TableRows(label, exact=None, estimate=int(estimate))
