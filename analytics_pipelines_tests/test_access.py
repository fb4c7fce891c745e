"""Audiences as PostgreSQL enforces them: real login roles over TCP, granted an audience role by
`access apply`, read exactly the KPI rows the catalog allows them and nothing else.

Each scenario compares what a login reads with the owner's rows filtered in plain Python.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa
from alembic import command

from analytics_pipelines.lib.access.policies import AccessApplyError, apply_from_url
from analytics_pipelines.lib.catalog import load_catalog
from analytics_pipelines_tests.conftest import PROJECT_ROOT, alembic_config

TAG = uuid.uuid4().hex[:6]  # roles belong to the whole cluster: names of this run only
NORTH = f"north_{TAG}"
PARTNER = f"partner_{TAG}"
EVERYTHING = f"everything_{TAG}"
PASSWORD = "a password with 'quotes'"

SOURCES = """
sources:
  - name: orders
    value_chain: sales
    landing_prefix: landing/orders
    format: csv
    columns:
      - {name: order_id, type: string, required: true}
      - {name: ordered_at, type: timestamp, required: true}
      - {name: region, type: string, allowed_values: [north, south]}
      - {name: channel, type: string, allowed_values: [web, partner]}
      - {name: amount, type: decimal}
    primary_key: [order_id]
    event_time: ordered_at
"""
KPIS = """
kpis:
  - name: revenue
    value_chain: sales
    description: Order value.
    source: orders
    measure: sum(amount)
    dimensions: [region, channel]
  - name: orders_total
    value_chain: sales
    description: Orders, no breakdown.
    source: orders
    measure: count(*)
  - name: partner_orders
    value_chain: partners
    description: Orders per channel.
    source: orders
    measure: count(*)
    dimensions: [channel]
"""


def audiences_yaml(north_filter: str = "region = 'north'", with_partner: bool = True) -> str:
    text = f"""
audiences:
  - name: {NORTH}
    value_chains: [sales]
    filter: "{north_filter}"
  - name: {EVERYTHING}
    value_chains: [sales, partners]
"""
    if with_partner:
        text += f"""
  - name: {PARTNER}
    kpis: [partner_orders, revenue]
    filter: channel = 'partner'
"""
    return text


def write_catalog(folder: Path, audiences: str) -> Path:
    for sub, text in (("sources", SOURCES), ("kpis", KPIS), ("access", audiences)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / "catalog.yaml").write_text(text)
    return folder


def kpi_rows() -> list[dict[str, Any]]:
    """Every grouping of revenue (the total, by region, by channel, by both), for two days."""
    rows = []
    for day in (dt.date(2026, 1, 5), dt.date(2026, 1, 6)):
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        cells: dict[str, list[dict[str, Any]]] = {
            "revenue": [{}]
            + [{"region": r} for r in ("north", "south")]
            + [{"channel": c} for c in ("web", "partner")]
            + [{"region": r, "channel": c} for r in ("north", "south") for c in ("web", "partner")],
            "orders_total": [{}],
            "partner_orders": [{}, {"channel": "web"}, {"channel": "partner"}],
        }
        for kpi, groupings in cells.items():
            for index, dims in enumerate(groupings):
                rows.append(
                    {
                        "kpi": kpi,
                        "grain": "day",
                        "period_start": start,
                        "period_end": start + dt.timedelta(days=1),
                        "dimensions": dims,
                        "value": Decimal(100 * day.day + index),
                    }
                )
    return rows


@pytest.fixture(scope="module")
def access_db(postgres_server_url: str) -> Iterator[str]:
    """A migrated database of its own with KPI rows and a row in each private schema."""
    name = f"access_{TAG}"
    admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    command.upgrade(alembic_config(url), "head")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for schema in ("raw", "clean"):
            conn.execute(sa.text(f"CREATE TABLE {schema}.orders (customer_email text)"))
            conn.execute(sa.text(f"INSERT INTO {schema}.orders VALUES ('someone@example.com')"))
        conn.execute(
            sa.text(
                "INSERT INTO kpi.kpi_values (kpi, grain, period_start, period_end, dimensions,"
                " value) VALUES (:kpi, :grain, :period_start, :period_end,"
                " CAST(:dimensions AS jsonb), :value)"
            ),
            [{**row, "dimensions": json.dumps(row["dimensions"])} for row in kpi_rows()],
        )
        # A view made by hand, reading with its owner's rights: no audience may read it.
        conn.execute(sa.text("CREATE VIEW kpi.hand_made AS SELECT * FROM kpi.kpi_values"))
        conn.execute(sa.text("ANALYZE kpi.kpi_values"))  # statistics exist, to be hidden
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            roles = conn.execute(
                sa.text("SELECT rolname FROM pg_roles WHERE rolname LIKE :pattern"),
                {"pattern": f"%{TAG}%"},
            ).scalars()
            for role in list(roles):
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalog(tmp_path_factory.mktemp("access-catalog"), audiences_yaml())


@pytest.fixture(scope="module")
def applied(access_db: str, catalog_dir: Path) -> list[str]:
    return apply_from_url(access_db, load_catalog(catalog_dir))


def make_login(url: str, audience_role: str) -> str:
    """A LOGIN role with a password, member of the audience role (what an operator does)."""
    login = f"login_{uuid.uuid4().hex[:6]}_{TAG}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        quoted = PASSWORD.replace("'", "''")
        conn.execute(sa.text(f"CREATE ROLE \"{login}\" LOGIN PASSWORD '{quoted}'"))
        conn.execute(sa.text(f'GRANT "{audience_role}" TO "{login}"'))
    admin.dispose()
    return login


def connect_as(url: str, login: str) -> Any:
    """psycopg2 over TCP to the server's host and port, as the login."""
    parts = sa.make_url(url)
    conn = psycopg2.connect(
        host=parts.host, port=parts.port, dbname=parts.database, user=login, password=PASSWORD
    )
    conn.autocommit = True
    return conn


def read(conn: Any, query: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cursor:
        cursor.execute(query)
        return list(cursor.fetchall())


def refused(conn: Any, query: str) -> str:
    with pytest.raises(psycopg2.Error) as caught, conn.cursor() as cursor:
        cursor.execute(query)
    return str(caught.value)


def owner_rows(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT kpi, grain, period_start, dimensions, value FROM kpi.kpi_values")
        ).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def visible(conn: Any) -> set[tuple[Any, ...]]:
    rows = read(conn, "SELECT kpi, grain, period_start, dimensions, value FROM kpi.kpi_values")
    return {(k, g, p, json.dumps(d, sort_keys=True), v) for k, g, p, d, v in rows}


def expected(url: str, keep: Any) -> set[tuple[Any, ...]]:
    return {
        (k, g, p, json.dumps(d, sort_keys=True), v)
        for k, g, p, d, v in owner_rows(url)
        if keep(k, d)
    }


def cli(env: dict[str, str], *args: str, cwd: Path = PROJECT_ROOT) -> str:
    """Run `analytics-pipelines ARGS` as a user would (in `cwd`); its output."""
    done = subprocess.run(
        [sys.executable, "-m", "analytics_pipelines.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def role(audience: str) -> str:
    return f"ap_audience_{audience}"


def test_an_audience_reads_exactly_its_rows_and_no_total(
    access_db: str, applied: list[str]
) -> None:
    conn = connect_as(access_db, make_login(access_db, role(NORTH)))
    try:
        assert read(conn, "SELECT current_user, inet_server_port() IS NOT NULL")[0][1] is True
        rows = visible(conn)
        want = expected(
            access_db,
            lambda kpi, dims: kpi in ("revenue",) and dims.get("region") == "north",
        )
        assert rows == want
        assert len(want) == 2 * 3  # two days of {north}, {north, web}, {north, partner}
        # No total over regions: neither {} nor the channel rows summing every region.
        assert all("region" in json.loads(r[3]) for r in rows)
        # orders_total has no region breakdown: withheld altogether.
        assert read(conn, "SELECT count(*) FROM kpi.kpi_values WHERE kpi = 'orders_total'") == [
            (0,)
        ]
        # The KPI's view reads with the login's rights: the same rows.
        view = read(conn, "SELECT region, channel, value FROM kpi.revenue ORDER BY value")
        assert {(r[0], r[1]) for r in view} == {
            ("north", None),
            ("north", "web"),
            ("north", "partner"),
        }
        assert sorted(r[2] for r in view) == sorted(r[4] for r in want)
    finally:
        conn.close()


def test_an_unrestricted_audience_reads_totals_and_a_filter_can_combine_dimensions(
    access_db: str, applied: list[str]
) -> None:
    everything = connect_as(access_db, make_login(access_db, role(EVERYTHING)))
    partner = connect_as(access_db, make_login(access_db, role(PARTNER)))
    try:
        assert visible(everything) == expected(access_db, lambda kpi, dims: True)
        assert read(everything, "SELECT count(*) FROM kpi.orders_total") == [(2,)]
        # Rows of the partner channel, totals over regions included (the filter leaves region
        # open), of the two KPIs it names; nothing of the channel total.
        want = expected(
            access_db,
            lambda kpi, dims: (
                kpi in ("revenue", "partner_orders") and dims.get("channel") == "partner"
            ),
        )
        assert visible(partner) == want
        assert {json.loads(r[3]).get("region") for r in want} == {None, "north", "south"}
    finally:
        everything.close()
        partner.close()


def test_private_schemas_and_other_objects_are_closed(access_db: str, applied: list[str]) -> None:
    conn = connect_as(access_db, make_login(access_db, role(NORTH)))
    try:
        for table in ("raw.orders", "clean.orders", "quarantine.rows", "ingest.file_ledger"):
            schema = table.split(".")[0]
            assert f"permission denied for schema {schema}" in refused(
                conn, f"SELECT * FROM {table}"
            )
        # A view made by hand (owner's rights) and the view of a withheld KPI: not granted.
        assert "permission denied for view hand_made" in refused(
            conn, "SELECT * FROM kpi.hand_made"
        )
        assert "permission denied for view orders_total" in refused(
            conn, "SELECT * FROM kpi.orders_total"
        )
        assert "permission denied" in refused(conn, "DELETE FROM kpi.kpi_values")
        assert "permission denied" in refused(conn, "CREATE TABLE kpi.mine (x int)")
    finally:
        conn.close()


def test_no_bypass_through_set_role_functions_or_row_security(
    access_db: str, applied: list[str]
) -> None:
    conn = connect_as(access_db, make_login(access_db, role(NORTH)))
    try:
        for other in (role(EVERYTHING), role(PARTNER), "analytics_bi", "postgres"):
            assert "permission denied to set role" in refused(conn, f'SET ROLE "{other}"')
        # Turning row security off is refused, not a way around it.
        with conn.cursor() as cursor:
            cursor.execute("SET row_security = off")
        assert "row-level security" in refused(conn, "SELECT count(*) FROM kpi.kpi_values")
        with conn.cursor() as cursor:
            cursor.execute("RESET row_security")
        # No function of one's own (a SECURITY DEFINER one would run as its owner).
        for schema in ("public", "kpi"):
            assert "permission denied for schema" in refused(
                conn,
                f"CREATE FUNCTION {schema}.peek() RETURNS bigint LANGUAGE sql"
                " SECURITY DEFINER AS 'SELECT count(*) FROM kpi.kpi_values'",
            )
        # A function that fails on a value would show it in its error: the policy runs first,
        # so only north's values ever reach it.
        message = refused(
            conn, "SELECT count(*) FROM kpi.kpi_values WHERE (dimensions ->> 'region')::int > 0"
        )
        assert '"north"' in message and "south" not in message
        # COPY reads through the policies too.
        copied = io.StringIO()
        with conn.cursor() as cursor:
            cursor.copy_expert("COPY kpi.kpi_values (dimensions) TO STDOUT", copied)
        lines = copied.getvalue().splitlines()
        assert len(lines) == 6 and all('"region": "north"' in line for line in lines), lines
        # The planner's statistics (most common values) stay hidden behind the policies.
        owner = sa.create_engine(access_db)
        with owner.connect() as as_owner:
            assert as_owner.execute(
                sa.text("SELECT count(*) FROM pg_stats WHERE tablename = 'kpi_values'")
            ).scalar()
        owner.dispose()
        assert read(
            conn,
            "SELECT count(*) FROM pg_stats WHERE schemaname = 'kpi' AND tablename = 'kpi_values'",
        ) == [(0,)]
    finally:
        conn.close()


def test_access_check_prints_what_the_role_reads(
    access_db: str, catalog_dir: Path, applied: list[str]
) -> None:
    env = {**os.environ, "DATABASE_URL": access_db, "CATALOG_DIR": str(catalog_dir)}
    env.pop("ACCESS_ADMIN_DATABASE_URL", None)
    reading = json.loads(cli(env, "access", "check", NORTH, "--format", "json"))
    assert reading["role"] == role(NORTH)
    assert reading["schemas"] == {
        "kpi": True,
        "raw": False,
        "clean": False,
        "quarantine": False,
        "ingest": False,
    }
    by_breakdown = {
        (r["kpi"], tuple(r["breakdown"])): (r["rows"], r["values"]) for r in reading["rows"]
    }
    north = [d for k, _, _, d, _ in owner_rows(access_db) if d.get("region") == "north"]
    assert by_breakdown == {
        ("revenue", ("channel", "region")): (
            sum(1 for d in north if "channel" in d),
            {"channel": ["partner", "web"], "region": ["north"]},
        ),
        ("revenue", ("region",)): (
            sum(1 for d in north if "channel" not in d),
            {"region": ["north"]},
        ),
    }
    # Its KPI's view, and the forecast and anomaly views (nothing forecast yet).
    assert reading["views"] == {"kpi.revenue": len(north), "kpi.forecasts": 0, "kpi.anomalies": 0}
    assert reading["out_of_date"] == []

    table = cli(env, "access", "show")
    assert f"{NORTH} (role {role(NORTH)})" in table
    assert "withheld: orders_total (not broken down by region" in table


def test_access_check_loads_no_heavy_library(
    access_db: str, catalog_dir: Path, applied: list[str]
) -> None:
    from analytics_pipelines_tests.test_cli_imports import _probe

    env = {**os.environ, "DATABASE_URL": access_db, "CATALOG_DIR": str(catalog_dir)}
    assert _probe(["access", "check", NORTH], env) == {"code": 0, "heavy": []}


def test_policies_follow_catalog_changes(
    access_db: str, catalog_dir: Path, applied: list[str], tmp_path: Path
) -> None:
    login = make_login(access_db, role(NORTH))
    partner_login = make_login(access_db, role(PARTNER))
    changed = write_catalog(
        tmp_path / "changed", audiences_yaml("region = 'south'", with_partner=False)
    )
    # A KPI table made later (forecasts of the same shape) is covered by the next apply.
    engine = sa.create_engine(access_db)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE kpi.forecasts_probe (kpi text, dimensions jsonb, value numeric);"
                " INSERT INTO kpi.forecasts_probe VALUES"
                " ('revenue', '{\"region\": \"north\"}', 1), ('revenue', '{\"region\": \"south\"}', 2),"
                " ('revenue', '{}', 3)"
            )
        )
    engine.dispose()
    try:
        lines = apply_from_url(access_db, load_catalog(changed))
        assert any(role(NORTH) in line and "policy changed" in line for line in lines), lines
        assert any(f"dropped role {role(PARTNER)}" in line for line in lines), lines
        conn = connect_as(access_db, login)
        try:
            assert visible(conn) == expected(
                access_db, lambda kpi, dims: kpi == "revenue" and dims.get("region") == "south"
            )
            assert read(conn, "SELECT value FROM kpi.forecasts_probe") == [(Decimal(2),)]
        finally:
            conn.close()
        # The removed audience's role is gone, and with it its login's access.
        gone = connect_as(access_db, partner_login)
        try:
            assert "permission denied" in refused(gone, "SELECT * FROM kpi.kpi_values")
            assert read(
                gone, f"SELECT count(*) FROM pg_roles WHERE rolname = '{role(PARTNER)}'"
            ) == [(0,)]
        finally:
            gone.close()
        # Applying the same catalog again changes nothing.
        again = apply_from_url(access_db, load_catalog(changed))
        assert not any("policy changed" in line or "created role" in line for line in again)
    finally:
        apply_from_url(access_db, load_catalog(catalog_dir))
        engine = sa.create_engine(access_db)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE kpi.forecasts_probe"))
        engine.dispose()


def test_a_new_kpi_is_readable_after_apply_and_check_says_when_it_is_not(
    access_db: str, catalog_dir: Path, applied: list[str], tmp_path: Path
) -> None:
    folder = write_catalog(tmp_path / "new-kpi", audiences_yaml())
    (folder / "kpis" / "more.yaml").write_text(
        "kpis:\n  - name: web_revenue\n    value_chain: sales\n    description: Web orders.\n"
        "    source: orders\n    measure: sum(amount)\n    filter: channel = 'web'\n"
        "    dimensions: [region]\n"
    )
    env = {**os.environ, "DATABASE_URL": access_db, "CATALOG_DIR": str(folder)}
    env.pop("ACCESS_ADMIN_DATABASE_URL", None)
    before = json.loads(cli(env, "access", "check", NORTH, "--format", "json"))
    assert before["out_of_date"][0] == (
        "views the catalog grants but the role cannot read: kpi.web_revenue"
    )
    # The row policies do not admit the new KPI's rows either.
    assert before["out_of_date"][1].startswith("row policies made from another version")
    assert len(before["out_of_date"]) == 2
    try:
        apply_from_url(access_db, load_catalog(folder))
        after = json.loads(cli(env, "access", "check", NORTH, "--format", "json"))
        assert after["out_of_date"] == []
        assert after["views"] == {
            "kpi.revenue": before["views"]["kpi.revenue"],
            "kpi.web_revenue": 0,
            "kpi.forecasts": 0,
            "kpi.anomalies": 0,
        }
    finally:
        apply_from_url(access_db, load_catalog(catalog_dir))


def test_filter_values_reach_the_policy_quoted_by_postgresql(
    access_db: str, catalog_dir: Path, applied: list[str], tmp_path: Path
) -> None:
    """A value written to break out of its quotes stays one value: the login sees no row."""
    hostile = f"hostile_{TAG}"
    # YAML single-quoted scalar; the filter's strings double their quotes as SQL does.
    filter_text = "channel = 'x'' or true or ''' or channel = 'back\\slash'"
    folder = write_catalog(
        tmp_path / "hostile",
        audiences_yaml()
        + f"  - name: {hostile}\n    value_chains: [partners]\n"
        + "    filter: '"
        + filter_text.replace("'", "''")
        + "'\n",
    )
    (folder / "sources" / "catalog.yaml").write_text(
        SOURCES.replace(", allowed_values: [web, partner]", "")
    )
    catalog = load_catalog(folder)
    assert catalog.audiences[hostile].filter == filter_text
    try:
        apply_from_url(access_db, catalog)
        conn = connect_as(access_db, make_login(access_db, role(hostile)))
        try:
            assert read(conn, "SELECT count(*) FROM kpi.kpi_values") == [(0,)]
        finally:
            conn.close()
        engine = sa.create_engine(access_db)
        with engine.connect() as owner:
            qual = owner.execute(
                sa.text(
                    "SELECT qual FROM pg_policies WHERE policyname = :p"
                    " AND tablename = 'kpi_values'"
                ),
                {"p": role(hostile)},
            ).scalar_one()
        engine.dispose()
        assert "'x'' or true or '''" in qual and "'back\\slash'" in qual, qual
    finally:
        apply_from_url(access_db, load_catalog(catalog_dir))


def test_a_role_without_createrole_cannot_apply(access_db: str, catalog_dir: Path) -> None:
    login = make_login(access_db, "analytics_bi")
    url = sa.make_url(access_db).set(username=login, password=PASSWORD)
    with pytest.raises(AccessApplyError, match="may not create roles"):
        apply_from_url(url.render_as_string(hide_password=False), load_catalog(catalog_dir))


def test_analytics_bi_still_reads_every_row(access_db: str, applied: list[str]) -> None:
    conn = connect_as(access_db, make_login(access_db, "analytics_bi"))
    try:
        assert visible(conn) == expected(access_db, lambda kpi, dims: True)
    finally:
        conn.close()


def test_forecasts_and_anomalies_follow_the_audience(access_db: str, applied: list[str]) -> None:
    """The ML views (lib/ml) show an audience the forecasts and anomalies of its own KPIs and
    dimension values only; its totals stay hidden there too."""
    engine = sa.create_engine(access_db)
    series = [("revenue", {}), ("revenue", {"region": "north"}), ("revenue", {"region": "south"})]
    series.append(("orders_total", {}))
    day = dt.date(2026, 1, 7)
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    with engine.begin() as conn:
        for kpi, dims in series:
            common = {"kpi": kpi, "dims": json.dumps(dims), "day": day, "start": start}
            conn.execute(
                sa.text(
                    "INSERT INTO kpi.forecast_values (kpi, dimensions, period_date, period_start,"
                    " step, mean, lo80, hi80, lo95, hi95, model, history_days, last_observed)"
                    " VALUES (:kpi, CAST(:dims AS jsonb), :day, :start, 1, 10, 8, 12, 7, 13,"
                    " 'AutoETS', 60, :day)"
                ),
                common,
            )
            conn.execute(
                sa.text(
                    "INSERT INTO kpi.anomaly_verdicts (kpi, dimensions, period_date, period_start,"
                    " value, expected, lo, hi, level, anomalous, direction, deviation, score,"
                    " model, history_days) VALUES (:kpi, CAST(:dims AS jsonb), :day, :start, 50,"
                    " 10, 7, 13, 99, true, 'above', 40, 13.3, 'AutoETS', 60)"
                ),
                common,
            )
    engine.dispose()
    north = connect_as(access_db, make_login(access_db, role(NORTH)))
    everything = connect_as(access_db, make_login(access_db, role(EVERYTHING)))
    try:
        for view in ("forecasts", "anomalies"):
            query = f"SELECT kpi, series FROM kpi.{view} WHERE period_date = '2026-01-07'"
            assert sorted(read(north, query)) == [("revenue", "region=north")], view
            assert sorted(read(everything, query)) == sorted(
                (kpi, ", ".join(f"{k}={v}" for k, v in dims.items()) or "total")
                for kpi, dims in series
            ), view
        # The tables beneath answer the same: the policies, not the views, decide.
        assert read(north, "SELECT count(*) FROM kpi.forecast_values") == [(1,)]
    finally:
        north.close()
        everything.close()


def test_a_view_rebuilt_for_a_removed_dimension_stays_readable(
    access_db: str, catalog_dir: Path, applied: list[str]
) -> None:
    from analytics_pipelines.lib.kpi.views import ensure_view

    login = make_login(access_db, role(NORTH))
    revenue = load_catalog(catalog_dir).kpis["revenue"]
    fewer = revenue.model_copy(update={"dimensions": ["region"]})
    engine = sa.create_engine(access_db)
    try:
        # CREATE OR REPLACE cannot drop the `channel` column: the view is dropped and made again.
        with engine.begin() as conn:
            assert ensure_view(conn, fewer) is True
        conn = connect_as(access_db, login)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT * FROM kpi.revenue")
                columns = [column.name for column in cursor.description]
                rows = cursor.fetchall()
            assert "region" in columns and "channel" not in columns
            # What the north audience read before: its region's cells, no total.
            assert len(rows) == len(
                expected(access_db, lambda kpi, d: kpi == "revenue" and d.get("region") == "north")
            )
        finally:
            conn.close()
    finally:
        with engine.begin() as conn:
            ensure_view(conn, revenue)
        engine.dispose()
        apply_from_url(access_db, load_catalog(catalog_dir))


def test_access_check_says_when_the_applied_filter_is_not_the_catalogs(
    access_db: str, catalog_dir: Path, applied: list[str], tmp_path: Path
) -> None:
    changed = write_catalog(tmp_path / "south", audiences_yaml("region = 'south'"))
    env = {**os.environ, "DATABASE_URL": access_db, "CATALOG_DIR": str(changed)}
    env.pop("ACCESS_ADMIN_DATABASE_URL", None)
    before = json.loads(cli(env, "access", "check", NORTH, "--format", "json"))
    # The role still reads north's rows; the catalog now says south.
    regions = {v for row in before["rows"] for v in row["values"].get("region", [])}
    assert regions == {"north"}
    [problem] = before["out_of_date"]
    assert problem.startswith("row policies made from another version of the audience")
    assert "region = 'south'" in problem and "kpi.kpi_values" in problem
    text = cli(env, "access", "check", NORTH)
    assert "out of date with the catalog (run `analytics-pipelines access apply`)" in text
    try:
        apply_from_url(access_db, load_catalog(changed))
        after = json.loads(cli(env, "access", "check", NORTH, "--format", "json"))
        assert after["out_of_date"] == []
        assert {v for row in after["rows"] for v in row["values"].get("region", [])} == {"south"}
    finally:
        apply_from_url(access_db, load_catalog(catalog_dir))
