"""Forecasts and anomaly verdicts of day-grain KPIs (lib/ml), with BI views.

* `kpi.forecast_values`: one row per (KPI, series, local day ahead): the mean forecast and its
  80 % and 95 % prediction intervals, the model that made it and when. A series is one
  `dimensions` value of `kpi.kpi_values` (`{}` is the total). Each refresh of a KPI's forecast
  replaces all its rows.
* `kpi.anomaly_verdicts`: every judged day cell, anomalous or not: the value, what a model
  fitted on the days before it expected, the interval, and whether the value left it. Kept for
  every cell so that a recomputed value (a correction, late data) is found by comparing it with
  the value judged, and judged again. `alerted_at`: when the webhook took the alert (once per
  anomalous cell).
* Views `kpi.forecasts` and `kpi.anomalies` (the anomalous verdicts) add a readable series label
  for BI tools; `analytics_bi` reads them through the default privileges of migration 0004. They
  read with the reader's rights (`security_invoker`): an audience (lib/access) sees the rows
  the row-level security of the tables lets it see, the forecasts of its own KPIs only.

Tables, not per-KPI DDL at run time like the KPI views: their shape does not depend on the
catalog (dimensions are the same JSONB as in kpi_values), so one migration owns them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "kpi"

# The views' `series`: `region=north, channel=web`, or `total` for the total across dimensions.
FORECASTS_VIEW = (
    "CREATE VIEW kpi.forecasts WITH (security_invoker = true) AS SELECT r.kpi, "
    "(SELECT coalesce(string_agg(e.key || '=' || coalesce(e.value, 'null'), ', ' "
    "ORDER BY e.key), 'total') FROM jsonb_each_text(r.dimensions) AS e) AS series, "
    "r.dimensions, r.period_date, r.period_start, r.step, r.mean, r.lo80, r.hi80, r.lo95, "
    "r.hi95, r.model, r.history_days, r.last_observed, r.fitted_at "
    "FROM kpi.forecast_values AS r"
)
ANOMALIES_VIEW = (
    "CREATE VIEW kpi.anomalies WITH (security_invoker = true) AS SELECT r.kpi, "
    "(SELECT coalesce(string_agg(e.key || '=' || coalesce(e.value, 'null'), ', ' "
    "ORDER BY e.key), 'total') FROM jsonb_each_text(r.dimensions) AS e) AS series, "
    "r.dimensions, r.period_date, r.period_start, r.value, r.expected, r.lo, r.hi, r.level, "
    "r.direction, r.deviation, r.score, r.model, r.history_days, r.judged_at, r.alerted_at "
    "FROM kpi.anomaly_verdicts AS r WHERE r.anomalous"
)


def upgrade() -> None:
    op.create_table(
        "forecast_values",
        sa.Column("kpi", sa.Text, nullable=False),
        sa.Column("dimensions", postgresql.JSONB, nullable=False, comment="{} is the total series"),
        sa.Column("period_date", sa.Date, nullable=False, comment="local day forecast"),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step", sa.Integer, nullable=False, comment="days after the last observed"),
        sa.Column("mean", sa.Float, nullable=False),
        sa.Column("lo80", sa.Float, nullable=False),
        sa.Column("hi80", sa.Float, nullable=False),
        sa.Column("lo95", sa.Float, nullable=False),
        sa.Column("hi95", sa.Float, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("history_days", sa.Integer, nullable=False),
        sa.Column("last_observed", sa.Date, nullable=False),
        sa.Column(
            "fitted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("kpi", "dimensions", "period_date", name="forecast_values_pk"),
        sa.CheckConstraint(
            "lo95 <= lo80 AND lo80 <= mean AND mean <= hi80 AND hi80 <= hi95",
            name="forecast_values_intervals_nested",
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "anomaly_verdicts",
        sa.Column("kpi", sa.Text, nullable=False),
        sa.Column("dimensions", postgresql.JSONB, nullable=False),
        sa.Column("period_date", sa.Date, nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Numeric, nullable=False, comment="the value judged"),
        sa.Column("expected", sa.Float, nullable=False),
        sa.Column("lo", sa.Float, nullable=False),
        sa.Column("hi", sa.Float, nullable=False),
        sa.Column("level", sa.Float, nullable=False, comment="prediction interval, percent"),
        sa.Column("anomalous", sa.Boolean, nullable=False),
        sa.Column("direction", sa.Text, nullable=True, comment="above | below when anomalous"),
        sa.Column("deviation", sa.Float, nullable=False, comment="value - expected"),
        sa.Column(
            "score",
            sa.Float,
            nullable=True,
            comment="deviation in half-widths of the interval (|score| > 1: outside); "
            "NULL when the interval has no width",
        ),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("history_days", sa.Integer, nullable=False),
        sa.Column(
            "judged_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("alerted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kpi", "dimensions", "period_date", name="anomaly_verdicts_pk"),
        sa.CheckConstraint(
            "direction IS NULL OR direction IN ('above', 'below')",
            name="anomaly_verdicts_direction_known",
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "anomaly_verdicts_unalerted",
        "anomaly_verdicts",
        ["kpi"],
        schema=SCHEMA,
        postgresql_where=sa.text("anomalous AND alerted_at IS NULL"),
    )
    op.execute(FORECASTS_VIEW)
    op.execute(ANOMALIES_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS kpi.anomalies")
    op.execute("DROP VIEW IF EXISTS kpi.forecasts")
    op.drop_table("anomaly_verdicts", schema=SCHEMA)
    op.drop_table("forecast_values", schema=SCHEMA)
