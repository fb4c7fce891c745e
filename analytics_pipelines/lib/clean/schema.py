"""Create `clean.<source>` from the catalog and evolve it: new columns are added, type changes stop."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.tables import (
    CLEAN_SCHEMA,
    RAW_SCHEMA,
    clean_table,
    primary_key_name,
)

# format_type() spelling of each SQL type, to compare the catalog with the live table.
PG_TYPE_NAMES = {
    "string": "text",
    "integer": "bigint",
    "decimal": "numeric",
    "boolean": "boolean",
    "date": "date",
    "timestamp": "timestamp with time zone",
}
# Lossless widenings applied without asking: every bigint is a numeric.
WIDENINGS = {("bigint", "numeric")}


class SchemaDriftError(Exception):
    """The catalog and the live clean table disagree in a way that cannot be applied safely."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        table = f"{CLEAN_SCHEMA}.{source}"
        super().__init__(
            f"schema drift in {table}: "
            + "; ".join(problems)
            + ". Nothing was changed and no rows were cleaned. To proceed, either restore the"
            f" previous declaration in the catalog, or rebuild the table from raw with"
            f" `analytics-pipelines clean rebuild {source}` (drops {table}, empties the"
            " source's quarantine and re-cleans every loaded file with the new declaration)."
        )


def _qualified(conn: Connection, schema: str, name: str) -> str:
    preparer = conn.dialect.identifier_preparer
    return f"{preparer.quote_identifier(schema)}.{preparer.quote_identifier(name)}"


def live_columns(conn: Connection, schema: str, name: str) -> dict[str, str] | None:
    """Column name → format_type() of a live table, or None when the table does not exist."""
    oid = conn.execute(
        sa.text("SELECT to_regclass(:name)::oid"), {"name": _qualified(conn, schema, name)}
    ).scalar()
    if oid is None:
        return None
    rows = conn.execute(
        sa.text(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = :oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        ),
        {"oid": oid},
    )
    return {str(row[0]): str(row[1]) for row in rows}


def live_primary_key(conn: Connection, schema: str, name: str) -> list[str]:
    rows = conn.execute(
        sa.text(
            "SELECT a.attname FROM pg_index i"
            " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
            " WHERE i.indrelid = to_regclass(:name) AND i.indisprimary ORDER BY k.position"
        ),
        {"name": _qualified(conn, schema, name)},
    )
    return [str(row[0]) for row in rows]


def raw_columns(conn: Connection, source: SourceSpec) -> dict[str, str] | None:
    return live_columns(conn, RAW_SCHEMA, source.name)


def ensure_clean_table(
    conn: Connection, source: SourceSpec, *, defer_primary_key: bool = False
) -> list[str]:
    """Create or evolve `clean.<source>` inside the caller's transaction; return what changed.

    With `defer_primary_key`, a table created here has no primary key yet: the caller bulk
    loads it and then calls `add_primary_key` in the same transaction (building the index
    once, sorted, costs a fraction of maintaining it row by row).

    Raises SchemaDriftError (before changing anything) when a declared type or the primary key
    no longer matches the live table.
    """
    table = clean_table(source, with_primary_key=not defer_primary_key)
    conn.execute(sa.schema.CreateSchema(CLEAN_SCHEMA, if_not_exists=True))
    live = live_columns(conn, CLEAN_SCHEMA, source.name)
    if live is None:
        table.create(conn)
        return [f"created {CLEAN_SCHEMA}.{source.name}"]

    problems: list[str] = []
    widen: list[str] = []
    add: list[str] = []
    for column in source.columns:
        wanted = PG_TYPE_NAMES[column.type]
        have = live.get(column.name)
        if have is None:
            add.append(column.name)
        elif have != wanted:
            if (have, wanted) in WIDENINGS:
                widen.append(column.name)
            else:
                problems.append(
                    f"column {column.name} is {have} in the warehouse but the catalog now"
                    f" declares {column.type} ({wanted})"
                )
    live_key = live_primary_key(conn, CLEAN_SCHEMA, source.name)
    if live_key != list(source.primary_key):
        problems.append(
            f"the primary key is ({', '.join(live_key)}) in the warehouse but the catalog"
            f" declares ({', '.join(source.primary_key)})"
        )
    if problems:
        raise SchemaDriftError(source.name, problems)

    changes: list[str] = []
    qualified = _qualified(conn, CLEAN_SCHEMA, source.name)
    preparer = conn.dialect.identifier_preparer
    for name in add:
        column_type = table.c[name].type.compile(dialect=conn.dialect)
        conn.execute(
            sa.text(
                f"ALTER TABLE {qualified} ADD COLUMN {preparer.quote_identifier(name)} {column_type}"
            )
        )
        changes.append(f"added column {name} ({source.column(name).type})")
    for name in widen:
        conn.execute(
            sa.text(
                f"ALTER TABLE {qualified} ALTER COLUMN {preparer.quote_identifier(name)} TYPE numeric"
            )
        )
        changes.append(f"widened column {name} from integer to decimal")
    return changes


def add_primary_key(conn: Connection, source: SourceSpec) -> None:
    """The declared primary key on a table created with `defer_primary_key`."""
    preparer = conn.dialect.identifier_preparer
    conn.execute(
        sa.text(
            f"ALTER TABLE {_qualified(conn, CLEAN_SCHEMA, source.name)} ADD CONSTRAINT"
            f" {preparer.quote_identifier(primary_key_name(source))} PRIMARY KEY"
            f" ({', '.join(preparer.quote_identifier(c) for c in source.primary_key)})"
        )
    )


def drop_clean_table(conn: Connection, source: SourceSpec) -> None:
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {_qualified(conn, CLEAN_SCHEMA, source.name)}"))
