"""Apply the catalog's audiences to PostgreSQL: roles, row-level security policies, grants.

`apply_access` runs in one transaction (all or nothing) and is idempotent: run it after every
catalog change (`analytics-pipelines access apply`; `make dev` runs it at start). It needs a
role that may manage roles (CREATEROLE or superuser, `ACCESS_ADMIN_DATABASE_URL`), and that is
the owner of the `kpi` tables or a member of it: policies, views and grants are made as the
owner (`SET ROLE`), so the pipeline, which owns them, keeps reading and writing every row
(an owner is not subject to its table's policies), and needs no role privileges itself.

* every audience gets a NOLOGIN role `ap_audience_<name>` (commented, so a later run knows it);
* every table of schema `kpi` shaped like `kpi.kpi_values` (columns `kpi` and `dimensions`, so
  forecasts or anomalies stored that way too) gets row-level security: one policy per audience,
  `kpi IN (...) AND dimensions ? 'region' AND dimensions ->> 'region' = 'north'`, and one that
  keeps `analytics_bi` reading every row;
* an audience may use schema `kpi` and SELECT those tables, the views of its KPIs and the
  forecast and anomaly views, all of which read with the reader's rights (`security_invoker`);
  nothing else, nothing in raw, clean, quarantine or ingest;
* an audience gone from the catalog loses its policies and grants, and its role is dropped
  (with the memberships granted in it), unless another database of the cluster still grants
  it something.

A policy's text is compiled from the parsed filter by the KPI compiler (lib/kpi/expression_sql)
with bound values; DDL takes no parameters, so psycopg2 then inlines them with PostgreSQL's own
quoting (`mogrify`). No catalog text reaches SQL unparsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from psycopg2 import sql
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.access.models import ROLE_PREFIX, SHARED_VIEWS
from analytics_pipelines.lib.access.rules import AudienceAccess, Dimension, resolve_audience
from analytics_pipelines.lib.catalog import Catalog
from analytics_pipelines.lib.kpi.expression_sql import compile_filter
from analytics_pipelines.lib.kpi.views import ensure_view

SCHEMA = "kpi"
PRIVATE_SCHEMAS = ("raw", "clean", "quarantine", "ingest")
BI_ROLE = "analytics_bi"  # migration 0004: reads every KPI row
BI_POLICY = "analytics_bi_reads_all"
ROLE_COMMENT = "analytics_pipelines audience {name}"

_DIALECT = postgresql.psycopg2.dialect()
_CASTS: dict[str, sa.types.TypeEngine[Any]] = {
    "integer": sa.Numeric(),
    "decimal": sa.Numeric(),
    "boolean": sa.Boolean(),
    "date": sa.Date(),
    "timestamp": sa.DateTime(timezone=True),
}


class AccessApplyError(Exception):
    """The audiences could not be applied; the message says what to do."""


@dataclass
class ApplyReport:
    """What one `apply_access` did, for people."""

    roles_created: list[str] = field(default_factory=list)
    policies_changed: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    views: dict[str, list[str]] = field(default_factory=dict)  # role -> views granted
    roles_dropped: list[str] = field(default_factory=list)
    roles_kept: dict[str, str] = field(default_factory=dict)  # role -> why not dropped


def _dimension_value(dimensions: sa.ColumnElement[Any], dimension: Dimension) -> Any:
    text = dimensions[dimension.key].astext
    cast = _CASTS.get(dimension.type)
    return text if cast is None else sa.cast(text, cast)


def policy_condition(access: AudienceAccess) -> tuple[str, dict[str, Any]]:
    """The USING condition of the audience's policy, with its values as bound parameters."""
    kpi = sa.column("kpi", sa.Text())
    dimensions = sa.column("dimensions", JSONB())
    parts: list[sa.ColumnElement[bool]] = [
        kpi.in_(access.kpis) if access.kpis else sa.false(),
        # Broken down by every filtered dimension: totals over them are not this audience's.
        *(dimensions.has_key(key) for key in access.filtered_keys),
    ]
    if access.filter is not None:
        values = {c: _dimension_value(dimensions, d) for c, d in access.filtered.items()}
        parts.append(compile_filter(access.filter, values))
    compiled = sa.and_(*parts).compile(
        dialect=_DIALECT, compile_kwargs={"render_postcompile": True}
    )
    return str(compiled), dict(compiled.params)


def _cursor(conn: Connection) -> Any:
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    return dbapi.cursor()


def _run(conn: Connection, statement: sql.Composable) -> None:
    with _cursor(conn) as cursor:
        cursor.execute(statement)


def _rows(conn: Connection, query: str, params: dict[str, Any] | None = None) -> list[Any]:
    return list(conn.execute(sa.text(query), params or {}).all())


def _inline(conn: Connection, condition: tuple[str, dict[str, Any]]) -> sql.SQL:
    text, params = condition
    with _cursor(conn) as cursor:
        return sql.SQL(cursor.mogrify(text, params).decode())


def _check_privileges(conn: Connection) -> str:
    """The owner of kpi.kpi_values, after checking that we may manage roles and act as it."""
    me = conn.execute(
        sa.text(
            "SELECT current_user AS name, rolsuper OR rolcreaterole AS manages"
            " FROM pg_roles WHERE rolname = current_user"
        )
    ).one()
    owner = conn.execute(
        sa.text("SELECT tableowner FROM pg_tables WHERE schemaname = :s AND tablename = :t"),
        {"s": SCHEMA, "t": "kpi_values"},
    ).scalar()
    if owner is None:
        raise AccessApplyError("kpi.kpi_values does not exist: run the migrations first")
    if not me.manages:
        raise AccessApplyError(
            f"role {me.name!r} may not create roles: run `access apply` with a role that has "
            "CREATEROLE (set ACCESS_ADMIN_DATABASE_URL to its URL); the pipeline's own role "
            "does not need it"
        )
    member = conn.execute(
        sa.text("SELECT pg_has_role(current_user, :owner, 'USAGE')"), {"owner": owner}
    ).scalar()
    if not member:
        raise AccessApplyError(
            f"role {me.name!r} is not a member of {owner!r}, the owner of the KPI tables: "
            f"GRANT {owner} TO {me.name}, or use the owner's or a superuser's URL"
        )
    return str(owner)


def _ensure_roles(conn: Connection, accesses: list[AudienceAccess], report: ApplyReport) -> None:
    existing = {
        row.rolname: row
        for row in _rows(
            conn,
            "SELECT rolname, rolcanlogin, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb"
            " FROM pg_roles WHERE starts_with(rolname, :prefix)",
            {"prefix": ROLE_PREFIX},
        )
    }
    for access in accesses:
        role = sql.Identifier(access.audience.role)
        found = existing.get(access.audience.role)
        if found is None:
            _run(conn, sql.SQL("CREATE ROLE {} NOLOGIN").format(role))
            report.roles_created.append(access.audience.role)
        elif found.rolsuper or found.rolbypassrls:
            raise AccessApplyError(
                f"role {access.audience.role} is a superuser or bypasses row-level security: "
                "an audience role must not; fix or drop it, then apply again"
            )
        elif found.rolcanlogin or found.rolcreaterole or found.rolcreatedb:
            # Logins are members of the audience role, never the role itself.
            _run(conn, sql.SQL("ALTER ROLE {} NOLOGIN NOCREATEROLE NOCREATEDB").format(role))
        _run(
            conn,
            sql.SQL("COMMENT ON ROLE {} IS {}").format(
                role, sql.Literal(ROLE_COMMENT.format(name=access.audience.name))
            ),
        )


def protected_tables(conn: Connection) -> list[str]:
    """Tables of schema kpi holding KPI rows (`kpi` text and `dimensions` jsonb columns)."""
    return [
        row.relname
        for row in _rows(
            conn,
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')"
            " AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid"
            "   AND a.attname = 'kpi' AND a.atttypid = 'text'::regtype AND NOT a.attisdropped)"
            " AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid"
            "   AND a.attname = 'dimensions' AND a.atttypid = 'jsonb'::regtype"
            "   AND NOT a.attisdropped)"
            " ORDER BY c.relname",
            {"schema": SCHEMA},
        )
    ]


def _policy_qual(conn: Connection, table: str, policy: str) -> str | None:
    qual = conn.execute(
        sa.text(
            "SELECT qual FROM pg_policies WHERE schemaname = :s AND tablename = :t"
            " AND policyname = :p"
        ),
        {"s": SCHEMA, "t": table, "p": policy},
    ).scalar()
    return None if qual is None else str(qual)


def _create_policy(
    conn: Connection,
    table: str,
    policy: str,
    role: str,
    condition: sql.Composable,
    note: str | None = None,
) -> bool:
    """(Re)create one SELECT policy, with `note` as its comment; True when its condition or
    role changed."""
    before = _policy_qual(conn, table, policy)
    target = sql.Identifier(SCHEMA, table)
    _run(conn, sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(policy), target))
    _run(
        conn,
        sql.SQL("CREATE POLICY {} ON {} AS PERMISSIVE FOR SELECT TO {} USING ({})").format(
            sql.Identifier(policy), target, sql.Identifier(role), condition
        ),
    )
    if note is not None:
        _run(
            conn,
            sql.SQL("COMMENT ON POLICY {} ON {} IS {}").format(
                sql.Identifier(policy), target, sql.Literal(note)
            ),
        )
    return before != _policy_qual(conn, table, policy)


def _apply_policies(
    conn: Connection, tables: list[str], accesses: list[AudienceAccess], report: ApplyReport
) -> None:
    bi_exists = bool(
        conn.execute(
            sa.text("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = :r)"), {"r": BI_ROLE}
        ).scalar()
    )
    declared = {access.audience.role for access in accesses}
    conditions = {
        access.audience.role: (_inline(conn, policy_condition(access)), access.fingerprint)
        for access in accesses
    }
    for table in tables:
        _run(
            conn,
            sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(
                sql.Identifier(SCHEMA, table)
            ),
        )
        if bi_exists:
            _create_policy(conn, table, BI_POLICY, BI_ROLE, sql.SQL("true"))
        for role, (condition, note) in conditions.items():
            if _create_policy(conn, table, role, role, condition, note):
                report.policies_changed.append(f"{SCHEMA}.{table}: {role}")
        for row in _rows(
            conn,
            "SELECT policyname FROM pg_policies WHERE schemaname = :s AND tablename = :t"
            " AND starts_with(policyname, :prefix)",
            {"s": SCHEMA, "t": table, "prefix": ROLE_PREFIX},
        ):
            if row.policyname not in declared:
                _run(
                    conn,
                    sql.SQL("DROP POLICY {} ON {}").format(
                        sql.Identifier(row.policyname), sql.Identifier(SCHEMA, table)
                    ),
                )
                report.policies_changed.append(f"{SCHEMA}.{table}: {row.policyname} dropped")


def _revoke_everything(conn: Connection, role: str) -> None:
    name = sql.Identifier(role)
    for schema in (SCHEMA, *PRIVATE_SCHEMAS):
        exists = conn.execute(
            sa.text("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = :s)"), {"s": schema}
        ).scalar()
        if exists:
            _run(
                conn,
                sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(
                    sql.Identifier(schema), name
                ),
            )
            _run(
                conn,
                sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(sql.Identifier(schema), name),
            )


def _existing_views(conn: Connection) -> set[str]:
    return {
        row.viewname
        for row in _rows(conn, "SELECT viewname FROM pg_views WHERE schemaname = :s", {"s": SCHEMA})
    }


def _apply_grants(
    conn: Connection, tables: list[str], accesses: list[AudienceAccess], report: ApplyReport
) -> None:
    views = _existing_views(conn)
    for access in accesses:
        role = access.audience.role
        _revoke_everything(conn, role)
        _run(
            conn,
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(SCHEMA), sql.Identifier(role)
            ),
        )
        readable = [
            *tables,
            *(kpi for kpi in access.kpis if kpi in views),
            *(view for view in SHARED_VIEWS if view in views),
        ]
        for relation in readable:
            if relation in views:
                # Whatever made the view: it must read kpi_values with the reader's rights.
                _run(
                    conn,
                    sql.SQL("ALTER VIEW {} SET (security_invoker = true)").format(
                        sql.Identifier(SCHEMA, relation)
                    ),
                )
            _run(
                conn,
                sql.SQL("GRANT SELECT ON {} TO {}").format(
                    sql.Identifier(SCHEMA, relation), sql.Identifier(role)
                ),
            )
        report.views[role] = [kpi for kpi in access.kpis if kpi in views]


def _stale_roles(conn: Connection, declared: set[str]) -> list[str]:
    """Audience roles this project made (by their comment) that the catalog no longer declares."""
    return [
        row.rolname
        for row in _rows(
            conn,
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, :prefix)"
            " AND starts_with(shobj_description(oid, 'pg_authid'), :comment) ORDER BY rolname",
            {"prefix": ROLE_PREFIX, "comment": ROLE_COMMENT.format(name="")},
        )
        if row.rolname not in declared
    ]


def _drop_roles(conn: Connection, roles: list[str], report: ApplyReport) -> None:
    for role in roles:
        savepoint = conn.begin_nested()
        try:
            _run(conn, sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        except sa.exc.DBAPIError as error:
            savepoint.rollback()
            reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
            report.roles_kept[role] = reason
        else:
            savepoint.commit()
            report.roles_dropped.append(role)


def apply_access(conn: Connection, catalog: Catalog) -> ApplyReport:
    """Make the database's roles, policies and grants match the catalog's audiences.

    `conn` is in a transaction (committed by the caller); its user manages roles (see module).
    """
    owner = _check_privileges(conn)
    accesses = [
        resolve_audience(audience, catalog.kpis, catalog.sources)
        for audience in catalog.audiences.values()
    ]
    report = ApplyReport()
    _ensure_roles(conn, accesses, report)
    declared = {access.audience.role for access in accesses}
    stale = _stale_roles(conn, declared)
    _run(conn, sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
    for kpi in catalog.kpis.values():
        ensure_view(conn, kpi)  # views of new KPIs exist before they are granted
    report.tables = protected_tables(conn)
    _apply_policies(conn, report.tables, accesses, report)
    _apply_grants(conn, report.tables, accesses, report)
    for role in stale:
        _revoke_everything(conn, role)
    _run(conn, sql.SQL("RESET ROLE"))
    _drop_roles(conn, stale, report)
    return report


def report_lines(report: ApplyReport, catalog: Catalog) -> list[str]:
    """What `access apply` did, for people."""
    lines = [
        f"{len(catalog.audiences)} audience(s) applied; row-level security on "
        + (", ".join(f"{SCHEMA}.{t}" for t in report.tables) or "no table")
    ]
    lines.extend(f"  created role {role}" for role in report.roles_created)
    lines.extend(f"  policy changed: {change}" for change in report.policies_changed)
    for role, views in report.views.items():
        lines.append(f"  {role} reads views: {', '.join(views) or 'none yet'}")
    lines.extend(
        f"  dropped role {role} (no longer in the catalog)" for role in report.roles_dropped
    )
    lines.extend(
        f"  kept role {role} without access here: {why}" for role, why in report.roles_kept.items()
    )
    return lines


def apply_from_url(url: str, catalog: Catalog) -> list[str]:
    """Apply the catalog's audiences through a connection of its own; the lines of its report."""
    from analytics_pipelines.lib.settings import normalise_database_url

    engine = sa.create_engine(normalise_database_url(url))
    try:
        with engine.begin() as conn:
            report = apply_access(conn, catalog)
    except sa.exc.OperationalError as error:
        from analytics_pipelines.lib.pg import describe_db_error

        raise AccessApplyError(describe_db_error(error)) from error
    finally:
        engine.dispose()
    return report_lines(report, catalog)
