"""One view per KPI (`kpi.<name>`) for BI tools: local period start, dimension columns, value,
target and target status (lib/kpi/targets.py), and the previous and year-ago values with their
differences and growth (lib/kpi/period_over_period.py, computed when read). Views run with the
reader's rights (`security_invoker`): the row-level security of lib/access applies through them.

DDL takes no bind parameters, so the KPI name and time zone are quoted as SQL literals and the
names as identifiers by psycopg2.sql; both were validated by the catalog (name pattern, IANA zone).
The target columns are the SQL of lib/kpi/targets.py, shared with `kpi show` and the check.
A comment on the view records a hash of its definition: the view is only replaced when the
definition changes, which keeps refreshes from taking the view's exclusive lock every time.
"""

from __future__ import annotations

import hashlib

import psycopg2
import sqlalchemy as sa
from psycopg2 import sql
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog import KpiSpec
from analytics_pipelines.lib.kpi.display import dimension_column
from analytics_pipelines.lib.kpi.period_over_period import columns_sql, joins_sql
from analytics_pipelines.lib.kpi.targets import status_sql, target_sql

SCHEMA = "kpi"


def view_definition(kpi: KpiSpec) -> sql.Composed:
    tz = sql.Literal(kpi.timezone)
    # The target is computed once per row in a lateral select, the status compares with it.
    target = sql.Identifier("t", "target")
    dimensions = [
        sql.SQL("v.dimensions ->> {} AS {}").format(
            sql.Literal(name), sql.Identifier(dimension_column(name))
        )
        for name in kpi.dimensions
    ]
    columns = [
        sql.SQL("v.grain"),
        sql.SQL("v.period_start AT TIME ZONE {} AS period_start_local").format(tz),
        sql.SQL("v.period_end AT TIME ZONE {} AS period_end_local").format(tz),
        sql.SQL("v.period_start"),
        sql.SQL("v.period_end"),
        *dimensions,
        # Which dimensions a row is broken down by: '{}' is the total over all of them.
        sql.SQL(
            "ARRAY(SELECT k FROM jsonb_object_keys(v.dimensions) AS k ORDER BY k) AS breakdown"
        ),
        sql.SQL("v.value"),
        sql.SQL("t.target"),
        sql.SQL("{} AS target_status").format(
            status_sql(kpi, sql.Identifier("v", "value"), target)
        ),
        *columns_sql("v"),
        sql.SQL("v.computed_at"),
    ]
    return sql.SQL(
        # security_invoker: the view reads kpi_values with the reader's rights, so row-level
        # security (lib/access) holds through it.
        "CREATE OR REPLACE VIEW {schema}.{view} WITH (security_invoker = true) AS SELECT {columns} "
        "FROM {schema}.kpi_values AS v CROSS JOIN LATERAL (SELECT {target} AS target) AS t "
        "{comparisons} WHERE v.kpi = {name}"
    ).format(
        schema=sql.Identifier(SCHEMA),
        view=sql.Identifier(kpi.name),
        columns=sql.SQL(", ").join(columns),
        target=target_sql(kpi, sql.Identifier("v", "grain"), sql.Identifier("v", "dimensions")),
        comparisons=joins_sql("v", tz),
        name=sql.Literal(kpi.name),
    )


def _fingerprint(kpi: KpiSpec) -> str:
    target = kpi.target.model_dump_json() if kpi.target is not None else ""
    shape = "|".join([kpi.name, kpi.timezone, *kpi.dimensions, target, "v4"])
    return "analytics_pipelines kpi view " + hashlib.sha256(shape.encode()).hexdigest()[:16]


# Who may do what on a view besides its owner (grantee NULL: PUBLIC); privilege names are
# PostgreSQL's own keywords (SELECT, INSERT, ...).
_GRANTS = """
SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type
FROM pg_class AS c CROSS JOIN LATERAL aclexplode(c.relacl) AS a
WHERE c.oid = to_regclass(%(view)s) AND a.grantee <> c.relowner
"""


_TABLE_PRIVILEGES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}
)


def ensure_view(conn: Connection, kpi: KpiSpec) -> bool:
    """Create or update `kpi.<name>` when its definition changed; True when it was (re)created."""
    fingerprint = _fingerprint(kpi)
    qualified = f'"{SCHEMA}"."{kpi.name}"'  # a value for to_regclass, not SQL text
    current = conn.execute(
        sa.text("SELECT obj_description(to_regclass(:view), 'pg_class')"), {"view": qualified}
    ).scalar()
    if current == fingerprint:
        return False
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": qualified})
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.execute("SAVEPOINT kpi_view")
        try:
            cursor.execute(view_definition(kpi))
        except psycopg2.Error:
            # CREATE OR REPLACE cannot drop or rename columns (a dimension was removed).
            cursor.execute("ROLLBACK TO SAVEPOINT kpi_view")
            cursor.execute(_GRANTS, {"view": qualified})
            grants = cursor.fetchall()
            cursor.execute(
                sql.SQL("DROP VIEW IF EXISTS {}.{}").format(
                    sql.Identifier(SCHEMA), sql.Identifier(kpi.name)
                )
            )
            cursor.execute(view_definition(kpi))
            # The audiences that read the old view read the new one (`access apply` not needed).
            for grantee, privilege in grants:
                if privilege not in _TABLE_PRIVILEGES:
                    continue
                cursor.execute(
                    sql.SQL("GRANT {} ON {}.{} TO {}").format(
                        sql.SQL(privilege),
                        sql.Identifier(SCHEMA),
                        sql.Identifier(kpi.name),
                        sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee),
                    )
                )
        cursor.execute(
            sql.SQL("COMMENT ON VIEW {}.{} IS {}").format(
                sql.Identifier(SCHEMA), sql.Identifier(kpi.name), sql.Literal(fingerprint)
            )
        )
    finally:
        cursor.close()
    return True
