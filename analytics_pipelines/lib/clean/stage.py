"""Validate and type a set of raw rows in one pass into a transaction-local staging table.

The staging table holds, per raw row, the typed values, `_ok`, and — only for failing rows — the
raw values and every failed rule. Expressions are layered in sub-queries fenced with OFFSET 0 so
that PostgreSQL computes each normalised text and each cast once per row, not once per use.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean import validate
from analytics_pipelines.lib.tables import FILE_ID, LINE, LOADED_AT

STAGE_TABLE = "_clean_stage"
OK, RAW, FAILURES = "_ok", "_raw", "_failures"


@dataclass(frozen=True)
class RawInput:
    """Rows to validate: a relation with text columns plus `_file_id` and `_line`."""

    relation: sa.FromClause
    text_columns: list[str]
    where: sa.ColumnElement[bool] | None = None


def raw_input_table(schema: str, name: str, live: dict[str, str]) -> sa.Table:
    """A Core table for a live raw-shaped relation (every non-lineage column is text)."""
    text_columns = [c for c in live if c not in (FILE_ID, LINE, LOADED_AT)]
    return sa.Table(
        name,
        sa.MetaData(),
        *(sa.Column(c, sa.Text) for c in text_columns),
        sa.Column(FILE_ID, sa.BigInteger),
        sa.Column(LINE, sa.BigInteger),
        schema=schema,
    )


def stage_table(source: SourceSpec) -> sa.Table:
    return sa.Table(
        STAGE_TABLE,
        sa.MetaData(),
        *(sa.Column(c.name, validate.sql_type(c)) for c in source.columns),
        sa.Column(FILE_ID, sa.BigInteger, nullable=False),
        sa.Column(LINE, sa.BigInteger, nullable=False),
        sa.Column(OK, sa.Boolean, nullable=False),
        sa.Column(RAW, postgresql.JSONB),
        sa.Column(FAILURES, postgresql.JSONB),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )


def _fenced(select: sa.Select, name: str) -> sa.Subquery:
    # OFFSET keeps the planner from flattening the level into its parent (and re-evaluating it).
    return select.offset(0).subquery(name)


def build_stage(conn: Connection, source: SourceSpec, rows: RawInput) -> sa.Table:
    """Create the staging table for `rows` (dropped at commit) and fill it in one statement.

    Optimistic first: plain casts cost a fraction of guarded ones, and most batches have no
    value of the wrong type. If a cast fails, that attempt is rolled back (savepoint) and the
    batch is staged again with every cast guarded.
    """
    stage = stage_table(source)
    stage.create(conn)
    names = [c.name for c in source.columns] + [FILE_ID, LINE, OK, RAW, FAILURES]
    try:
        with conn.begin_nested():
            conn.execute(sa.insert(stage).from_select(names, _staging_select(source, rows, False)))
    except sa.exc.DataError:
        conn.execute(sa.insert(stage).from_select(names, _staging_select(source, rows, True)))
    conn.execute(sa.text(f"ANALYZE {STAGE_TABLE}"))
    return stage


def _staging_select(source: SourceSpec, rows: RawInput, guarded: bool) -> sa.Select:
    relation = rows.relation
    raw_names = list(rows.text_columns)
    declared = list(source.columns)

    def raw_of(name: str) -> sa.ColumnElement:
        if name in raw_names:
            return relation.c[name]
        # A column declared after the raw table was created: missing in every row.
        return sa.null().cast(sa.Text)

    level1 = sa.select(
        relation.c[FILE_ID],
        relation.c[LINE],
        *(relation.c[name].label(f"__r{i}") for i, name in enumerate(raw_names)),
        *(
            validate.normalise(raw_of(c.name), c, source).label(f"__n{i}")
            for i, c in enumerate(declared)
        ),
    )
    if rows.where is not None:
        level1 = level1.where(rows.where)
    l1 = _fenced(level1, "l1")

    raw_cols = [l1.c[f"__r{i}"] for i in range(len(raw_names))]
    l2 = _fenced(
        sa.select(
            l1.c[FILE_ID],
            l1.c[LINE],
            *raw_cols,
            *(l1.c[f"__n{i}"] for i in range(len(declared))),
            *(
                validate.typed(l1.c[f"__n{i}"], c, source, guarded=guarded).label(f"__t{i}")
                for i, c in enumerate(declared)
            ),
        ),
        "l2",
    )

    def checks_over(sub: sa.Subquery) -> list[validate.RuleCheck]:
        return [
            check
            for i, c in enumerate(declared)
            for check in validate.rule_checks(c, source, sub.c[f"__n{i}"], sub.c[f"__t{i}"])
        ]

    l3 = _fenced(
        sa.select(*l2.c, validate.any_failed(checks_over(l2)).label("__bad")),
        "l3",
    )
    bad = l3.c["__bad"]
    raw_json = validate.json_object([(name, l3.c[f"__r{i}"]) for i, name in enumerate(raw_names)])
    return sa.select(
        *(l3.c[f"__t{i}"].label(c.name) for i, c in enumerate(declared)),
        l3.c[FILE_ID],
        l3.c[LINE],
        sa.not_(bad).label(OK),
        sa.case((bad, raw_json), else_=None).label(RAW),
        sa.case((bad, validate.failures_json(checks_over(l3))), else_=None).label(FAILURES),
    )
