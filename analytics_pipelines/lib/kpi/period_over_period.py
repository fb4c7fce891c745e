"""Period-over-period values: the previous period and the same period a year earlier, computed
when read from the stored values (so they are exact the moment their inputs are, and need no
refresh of their own). One rule, written once as SQL (psycopg2.sql) and used by the BI view
`kpi.<name>` and `analytics-pipelines kpi show`.

The base period is found on local calendars in the KPI's time zone (PostgreSQL's time zone data
and calendar arithmetic, as everywhere else):

* previous: the local period before (the day before, 7 days, a month, 3 months, a year); the
  day before Berlin's 2026-03-30 is the 23-hour 2026-03-29. An hour's previous hour is the
  instant one hour earlier, so the two 02:00 hours of an autumn night follow each other.
* year ago: the same local start one calendar year earlier, except weeks, which compare with
  the week 52 weeks earlier (the same weekdays). A year before 2024-02-29 is 2023-02-28
  (calendar arithmetic clamps to the month's end), so that day is compared twice, with
  2024-02-28 too; 2024-02-29 itself is no year-ago base. A local start that does not exist a
  year earlier (an hour in a spring-forward gap) has no base.

Each gives the base value, the difference `value - base` and the growth `(value - base) / base`
(0.25 is +25 %), NULL when the base is 0 or missing. The base is the same KPI, grain and
dimensions at the base period's start: an equality on the primary key of `kpi.kpi_values`.
"""

from __future__ import annotations

from psycopg2 import sql

COMPARISONS = ("previous", "year_ago")
COLUMNS = tuple(f"{c}_{part}" for c in COMPARISONS for part in ("value", "diff", "growth"))

_PREVIOUS = {"day": "1 day", "week": "7 days", "month": "1 month", "quarter": "3 months"}
_YEAR_AGO = {"week": "364 days"}


def _step(steps: dict[str, str], grain: sql.Composable) -> sql.Composable:
    whens = [
        sql.SQL("WHEN {} THEN CAST({} AS interval)").format(sql.Literal(g), sql.Literal(step))
        for g, step in steps.items()
    ]
    return sql.SQL("CASE {} {} ELSE interval '1 year' END").format(grain, sql.SQL(" ").join(whens))


def base_start_sql(
    comparison: str, grain: sql.Composable, start: sql.Composable, timezone: sql.Composable
) -> sql.Composable:
    """The start (timestamptz) of the base period of the period of `grain` starting at `start`."""
    local = sql.SQL("timezone({tz}, timezone({tz}, {start}) - {step})")
    if comparison == "year_ago":
        return local.format(tz=timezone, start=start, step=_step(_YEAR_AGO, grain))
    return sql.SQL(
        "CASE WHEN {grain} = 'hour' THEN {start} - interval '1 hour' ELSE {local} END"
    ).format(
        grain=grain,
        start=start,
        local=local.format(tz=timezone, start=start, step=_step(_PREVIOUS, grain)),
    )


def joins_sql(values: str, timezone: sql.Composable) -> sql.Composable:
    """LEFT JOINs of the base values (aliases `previous`, `year_ago`) to the rows `values`."""
    table = sql.Identifier("kpi", "kpi_values")
    row = sql.Identifier(values)
    joins = [
        sql.SQL(
            "LEFT JOIN {table} AS {base} ON {base}.kpi = {row}.kpi AND {base}.grain = {row}.grain "
            "AND {base}.dimensions = {row}.dimensions AND {base}.period_start = {start}"
        ).format(
            table=table,
            base=sql.Identifier(comparison),
            row=row,
            start=base_start_sql(
                comparison,
                sql.Identifier(values, "grain"),
                sql.Identifier(values, "period_start"),
                timezone,
            ),
        )
        for comparison in COMPARISONS
    ]
    return sql.SQL(" ").join(joins)


def columns_sql(values: str) -> list[sql.Composable]:
    """The six comparison columns, named as in COLUMNS, for rows `values` joined by joins_sql."""
    value = sql.Identifier(values, "value")
    columns: list[sql.Composable] = []
    for comparison in COMPARISONS:
        base = sql.Identifier(comparison, "value")
        columns += [
            sql.SQL("{} AS {}").format(base, sql.Identifier(f"{comparison}_value")),
            sql.SQL("{} - {} AS {}").format(value, base, sql.Identifier(f"{comparison}_diff")),
            sql.SQL("({v} - {b}) / NULLIF({b}, 0) AS {name}").format(
                v=value, b=base, name=sql.Identifier(f"{comparison}_growth")
            ),
        ]
    return columns
