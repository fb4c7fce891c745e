"""What audiences declare (`access show`) and what a role can actually read (`access check`).

`role_reading` queries as the role itself (`SET ROLE`), so it reports what PostgreSQL lets that
role see (grants and row-level security), not what the catalog says. psycopg2 only: the
command answers without loading SQLAlchemy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql

from analytics_pipelines.lib.access.models import ROLE_PREFIX, SHARED_VIEWS
from analytics_pipelines.lib.access.rules import AudienceAccess, resolve_audience
from analytics_pipelines.lib.catalog import Catalog
from analytics_pipelines.lib.pg import DbApiConnection, fetch_all

SCHEMAS = ("kpi", "raw", "clean", "quarantine", "ingest")
MAX_VALUES_SHOWN = 10


def audiences_of(catalog: Catalog) -> list[AudienceAccess]:
    return [
        resolve_audience(audience, catalog.kpis, catalog.sources)
        for audience in catalog.audiences.values()
    ]


def describe_audience(access: AudienceAccess) -> dict[str, Any]:
    audience = access.audience
    return {
        "audience": audience.name,
        "role": audience.role,
        "description": audience.description,
        "value_chains": audience.value_chains,
        "kpis": access.kpis,
        "filter": audience.filter,
        "totals_hidden_over": access.filtered_keys,
        "withheld": access.withheld,
    }


class RoleCheckError(Exception):
    """The role cannot be checked (unknown, or we may not act as it); the message says why."""


@dataclass
class RoleReading:
    """What a role read, queried as it."""

    role: str
    schemas: dict[str, bool] = field(default_factory=dict)  # schema -> usage
    # (table, kpi, breakdown) -> rows
    rows: list[dict[str, Any]] = field(default_factory=list)
    views: dict[str, int] = field(default_factory=dict)  # view -> rows
    other_tables: list[str] = field(default_factory=list)  # readable, without KPI rows
    # table -> what `access apply` noted on the role's row policy there (None: no note)
    policies: dict[str, str | None] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "schemas": self.schemas,
            "rows": self.rows,
            "views": self.views,
            "other_tables": self.other_tables,
            "policies": self.policies,
        }


def resolve_role(conn: DbApiConnection, name: str, catalog: Catalog) -> str:
    """A role as given, or an audience's role by the audience's name."""
    candidates = [name, ROLE_PREFIX + name] if name in catalog.audiences else [name]
    for candidate in reversed(candidates):
        if fetch_all(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", (candidate,)):
            return candidate
    known = ", ".join(sorted(catalog.audiences)) or "none"
    raise RoleCheckError(
        f"no role {name!r} in the database (audiences of the catalog: {known}; "
        "`access apply` creates their roles)"
    )


def _readable_relations(conn: DbApiConnection) -> list[Any]:
    return fetch_all(
        conn,
        "SELECT c.relname, c.relkind IN ('v', 'm') AS is_view,"
        " EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'kpi'"
        "   AND NOT a.attisdropped)"
        " AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid"
        "   AND a.attname = 'dimensions' AND a.atttypid = 'jsonb'::regtype"
        "   AND NOT a.attisdropped) AS holds_kpi_rows"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'kpi' AND c.relkind IN ('r', 'p', 'v', 'm')"
        " AND has_table_privilege(c.oid, 'SELECT') ORDER BY c.relname",
    )


def _kpi_rows(conn: DbApiConnection, table: str) -> list[dict[str, Any]]:
    relation = sql.Identifier("kpi", table)
    counts = fetch_all(
        conn,
        sql.SQL(
            "SELECT kpi, ARRAY(SELECT k FROM jsonb_object_keys(dimensions) AS k ORDER BY k)"
            " AS breakdown, count(*) AS rows FROM {} GROUP BY 1, 2 ORDER BY 1, 2"
        ).format(relation),
    )
    values = fetch_all(
        conn,
        sql.SQL(
            "SELECT v.kpi, e.key, array_agg(DISTINCT coalesce(e.value, 'null') ORDER BY"
            " coalesce(e.value, 'null')) AS seen FROM {} AS v, jsonb_each_text(v.dimensions) AS e"
            " GROUP BY 1, 2"
        ).format(relation),
    )
    seen = {(row.kpi, row.key): row.seen for row in values}
    return [
        {
            "table": f"kpi.{table}",
            "kpi": row.kpi,
            "breakdown": list(row.breakdown),
            "rows": row.rows,
            "values": {key: seen[(row.kpi, key)] for key in row.breakdown},
        }
        for row in counts
    ]


def role_reading(conn: DbApiConnection, role: str) -> RoleReading:
    """Query as `role` (the session's user must be a member of it, or a superuser)."""
    import psycopg2

    # Read before acting as the role: policies are catalog rows it need not see.
    policies = {
        f"kpi.{row.relname}": row.note
        for row in fetch_all(
            conn,
            "SELECT c.relname, obj_description(p.oid, 'pg_policy') AS note FROM pg_policy p"
            " JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'kpi' AND p.polname = %s ORDER BY c.relname",
            (role,),
        )
    }
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    except psycopg2.Error as error:
        raise RoleCheckError(
            f"cannot query as {role}: {str(error).strip().splitlines()[0]} (run with a URL whose "
            "user is a member of the role or a superuser, e.g. ACCESS_ADMIN_DATABASE_URL)"
        ) from error
    reading = RoleReading(role, policies=policies)
    try:
        for row in fetch_all(
            conn,
            "SELECT s AS schema, has_schema_privilege(s, 'USAGE') AS usage FROM unnest(%s) AS s"
            " WHERE EXISTS (SELECT FROM pg_namespace WHERE nspname = s)",
            (list(SCHEMAS),),
        ):
            reading.schemas[row.schema] = bool(row.usage)
        if reading.schemas.get("kpi"):
            for relation in _readable_relations(conn):
                if relation.is_view:
                    reading.views[f"kpi.{relation.relname}"] = fetch_all(
                        conn,
                        sql.SQL("SELECT count(*) AS n FROM {}").format(
                            sql.Identifier("kpi", relation.relname)
                        ),
                    )[0].n
                elif relation.holds_kpi_rows:
                    reading.rows.extend(_kpi_rows(conn, relation.relname))
                else:
                    reading.other_tables.append(f"kpi.{relation.relname}")
        return reading
    finally:
        with conn.cursor() as cursor:
            cursor.execute("RESET ROLE")


def out_of_date(reading: RoleReading, access: AudienceAccess) -> list[str]:
    """Where what the audience's role reads differs from what the catalog declares."""
    readable = set(reading.views)
    # The shared views are granted wherever they exist (an older database may lack them).
    declared = {f"kpi.{kpi}" for kpi in access.kpis} | (
        readable & {f"kpi.{view}" for view in SHARED_VIEWS}
    )
    problems = []
    if declared - readable:
        problems.append(
            f"views the catalog grants but the role cannot read: {', '.join(sorted(declared - readable))}"
        )
    if readable - declared:
        problems.append(
            f"views the role reads beyond the catalog: {', '.join(sorted(readable - declared))}"
        )
    # The rows it reads come from policies made of an earlier catalog (another filter, KPIs).
    stale = sorted(t for t, note in reading.policies.items() if note != access.fingerprint)
    if stale:
        declared_filter = access.audience.filter or "no filter"
        problems.append(
            f"row policies made from another version of the audience ({declared_filter!r} "
            f"and its KPIs now): {', '.join(stale)}"
        )
    return problems


def _values_text(values: dict[str, list[str]]) -> str:
    parts = []
    for key, seen in values.items():
        shown = ", ".join(seen[:MAX_VALUES_SHOWN]) + (
            ", ..." if len(seen) > MAX_VALUES_SHOWN else ""
        )
        parts.append(f"{key}: {shown}")
    return "; ".join(parts) or "total"


def reading_lines(reading: RoleReading) -> list[str]:
    """The reading as a person reads it."""
    usable = [s for s, usage in reading.schemas.items() if usage]
    closed = [s for s, usage in reading.schemas.items() if not usage]
    lines = [
        f"what {reading.role} can read, queried as {reading.role}:",
        f"  schemas: {', '.join(usable) or 'none'}"
        + (f" (no access: {', '.join(closed)})" if closed else ""),
    ]
    if reading.rows:
        width = max(len(row["kpi"]) for row in reading.rows)
        lines.append("  KPI rows (by breakdown):")
        for row in reading.rows:
            lines.append(
                f"    {row['table']}  {row['kpi']:<{width}}  {row['rows']:>7} rows  "
                f"{_values_text(row['values'])}"
            )
    elif reading.schemas.get("kpi"):
        lines.append("  KPI rows: none")
    if reading.views:
        lines.append("  views:")
        lines.extend(f"    {view}  {count} rows" for view, count in reading.views.items())
    if reading.other_tables:
        lines.append(f"  other tables: {', '.join(reading.other_tables)}")
    return lines
