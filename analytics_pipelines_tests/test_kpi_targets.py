"""KPI targets: catalog validation, the BI view's target columns, `kpi show` and the `on_target`
check, with expected values and statuses worked out in plain Python from the generated rows.

The view test spans the spring DST change in Berlin (2026-03-29 has 23 hours) and the latest
complete period is computed across it and across the autumn repeated hour.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from analytics_pipelines.defs.kpis.factory import (
    ON_TARGET_CHECK,
    build_kpi_definitions,
    kpi_asset_key,
)
from analytics_pipelines.lib.catalog import CatalogError, KpiSpec, SourceSpec, load_catalog
from analytics_pipelines.lib.kpi.engine import refresh_kpi
from analytics_pipelines.lib.kpi.plan import plan_kpi
from analytics_pipelines.lib.kpi.targets import latest_complete_period
from analytics_pipelines.lib.kpi.views import ensure_view
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import WarehouseResource
from analytics_pipelines_tests.test_kpi_support import (
    create_clean,
    make_catalog,
    make_kpi,
    make_source,
    unique,
)

BERLIN = ZoneInfo("Europe/Berlin")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DAYS = [dt.date(2026, 3, 28), dt.date(2026, 3, 29), dt.date(2026, 3, 30)]
DAY_TARGET = Decimal(10)
MONTH_TARGET = Decimal(100)
PRICE_CEILING = Decimal(5)

# (day, region): (qty, price, status) per row. Day totals of qty: 10 (exactly on target),
# 7 (off, on the 23-hour DST day), 12 (on). Prices: north on 28 March averages 4 (on),
# south 6 (off); on the DST day no north row is 'ok', so north's average price is NULL.
PLAN: dict[tuple[dt.date, str], list[tuple[int, str, str]]] = {
    (DAYS[0], "north"): [(3, "3.00", "ok"), (2, "5.00", "ok")],
    (DAYS[0], "south"): [(5, "6.00", "ok")],
    (DAYS[1], "north"): [(4, "9.00", "void")],
    (DAYS[1], "south"): [(3, "4.50", "ok")],
    (DAYS[2], "north"): [(6, "5.00", "ok")],
    (DAYS[2], "south"): [(6, "5.00", "ok")],
}


def _rows() -> list[dict[str, Any]]:
    rows = []
    for (day, region), lines in PLAN.items():
        for i, (qty, price, status) in enumerate(lines):
            # 01:30 and 03:30 local: either side of the missing hour on the DST day.
            local = dt.datetime.combine(day, dt.time(1 + 2 * i, 30), BERLIN)
            rows.append(
                {
                    "line_id": f"{day}-{region}-{i}",
                    "at": local.astimezone(dt.UTC),
                    "region": region,
                    "qty": qty,
                    "price": Decimal(price),
                    "status": status,
                }
            )
    return rows


def _cells(grain: str) -> dict[tuple[dt.date, str | None], list[tuple[int, str, str]]]:
    """Plain Python: the lines of each (local period start, region or None for the total)."""
    cells: dict[tuple[dt.date, str | None], list[tuple[int, str, str]]] = defaultdict(list)
    for (day, region), lines in PLAN.items():
        start = day if grain == "day" else day.replace(day=1)
        cells[(start, region)] += lines
        cells[(start, None)] += lines
    return cells


def _expected_status(value: Decimal | None, target: Decimal | None, higher: bool) -> str | None:
    if value is None or target is None:
        return None
    good = value >= target if higher else value <= target
    return "on_target" if good else "off_target"


def _ok_average(lines: list[tuple[int, str, str]]) -> Decimal | None:
    prices = [Decimal(p) for _, p, status in lines if status == "ok"]
    return sum(prices, Decimal(0)) / len(prices) if prices else None


def _expected(
    targets: dict[str, Decimal],
    value_of: Callable[[list[tuple[int, str, str]]], Decimal | None],
    *,
    higher: bool,
    total_only: bool,
) -> dict[tuple[str, dt.date, str | None], tuple[Decimal | None, Decimal | None, str | None]]:
    """(value, target, status) of every cell, by (grain, local period start, region)."""
    expected = {}
    for grain, target in targets.items():
        for (start, region), lines in _cells(grain).items():
            value = value_of(lines)
            cell_target = target if region is None or not total_only else None
            status = _expected_status(value, cell_target, higher)
            expected[(grain, start, region)] = (value, cell_target, status)
    return expected


@pytest.fixture
def targeted(warehouse: Warehouse) -> tuple[SourceSpec, KpiSpec, KpiSpec]:
    source = make_source(unique("kpi_target"))
    create_clean(warehouse, source, _rows())
    units = make_kpi(
        unique("units"), source.name, measure="sum(qty)", dimensions=["region"],
        grains=["day", "month"], timezone="Europe/Berlin",
        target={"direction": "higher", "value": DAY_TARGET, "by_grain": {"month": MONTH_TARGET}},
    )  # fmt: skip
    price = make_kpi(
        unique("price"), source.name, measure="avg(price)", filter="status = 'ok'",
        dimensions=["region"], grains=["day", "month"], timezone="Europe/Berlin",
        target={"direction": "lower", "value": PRICE_CEILING, "applies_to": "every_cell"},
    )  # fmt: skip
    catalog = make_catalog([source], [units, price])
    for kpi in (units, price):
        refresh_kpi(warehouse, plan_kpi(catalog, kpi.name), DAYS[0], DAYS[-1])
    return source, units, price


def _view_rows(warehouse: Warehouse, kpi: KpiSpec) -> dict[tuple[str, dt.date, str | None], Any]:
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT grain, period_start_local, region, value, target, target_status "
                f'FROM kpi."{kpi.name}"'  # the name is a generated identifier of this test
            )
        ).all()
    return {(r.grain, r.period_start_local.date(), r.region): r for r in rows}


# -- catalog ---------------------------------------------------------------------------------------


def _catalog_problems(tmp_path: Path, target: Any) -> list[str]:
    source = make_source("orders_t")
    kpi = {
        "name": "units_t", "value_chain": "sales", "description": "Units.", "source": "orders_t",
        "measure": "sum(qty)", "grains": ["day", "month"], "target": target,
    }  # fmt: skip
    (tmp_path / "sources").mkdir(exist_ok=True)
    (tmp_path / "kpis").mkdir(exist_ok=True)
    (tmp_path / "sources" / "s.yaml").write_text(
        yaml.safe_dump({"sources": [source.model_dump(mode="json", exclude_none=True)]})
    )
    (tmp_path / "kpis" / "k.yaml").write_text(yaml.safe_dump({"kpis": [kpi]}))
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path)
    return caught.value.problems


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ({"value": 5}, "target.direction: Field required"),
        ({"value": 5, "direction": "up"}, "target.direction: Input should be 'higher' or 'lower'"),
        ({"direction": "higher"}, "a target needs a value, or by_grain values"),
        (
            {"direction": "higher", "by_grain": {"week": 7000}},
            "target by_grain names grains the KPI is not computed per: week (grains: day, month)",
        ),
        ({"direction": "lower", "value": "five"}, "target.value: Input should be a valid decimal"),
        ({"direction": "lower", "value": ".nan"}, "target.value"),
        (
            {"direction": "lower", "value": 1, "applies_to": "regions"},
            "target.applies_to: Input should be 'total' or 'every_cell'",
        ),
    ],
)
def test_bad_targets_are_refused_with_file_entry_and_reason(
    tmp_path: Path, target: Any, expected: str
) -> None:
    problems = _catalog_problems(tmp_path, target)

    assert len(problems) == 1, problems
    assert "k.yaml: entry 1 (units_t): " in problems[0]
    assert expected in problems[0]


def test_a_target_per_grain_falls_back_to_the_common_value() -> None:
    kpi = make_kpi(
        "t", "s", measure="count(*)", grains=["day", "month"],
        target={"direction": "higher", "value": "2.5", "by_grain": {"month": 30000}},
    )  # fmt: skip
    assert kpi.target is not None
    assert kpi.target.for_grain("day") == Decimal("2.5")
    assert kpi.target.for_grain("month") == Decimal(30000)
    assert kpi.target.applies_to == "total"
    only_month = make_kpi(
        "t", "s", measure="count(*)", grains=["day", "month"],
        target={"direction": "higher", "by_grain": {"month": 30000}},
    )  # fmt: skip
    assert only_month.target is not None and only_month.target.for_grain("day") is None


# -- BI view ---------------------------------------------------------------------------------------


def test_view_shows_target_and_status_of_the_total_for_a_higher_target(
    warehouse: Warehouse, targeted: tuple[SourceSpec, KpiSpec, KpiSpec]
) -> None:
    _, units, _ = targeted
    rows = _view_rows(warehouse, units)

    # The target applies to the total only: regions get no target and no status.
    expected = _expected(
        {"day": DAY_TARGET, "month": MONTH_TARGET},
        lambda lines: Decimal(sum(qty for qty, _, _ in lines)),
        higher=True,
        total_only=True,
    )
    assert {k: (r.value, r.target, r.target_status) for k, r in rows.items()} == expected
    # What the plan promises: exactly on target counts as on target, the DST day is off.
    assert rows[("day", DAYS[0], None)].value == DAY_TARGET
    assert rows[("day", DAYS[0], None)].target_status == "on_target"
    assert rows[("day", DAYS[1], None)].target_status == "off_target"
    assert rows[("month", dt.date(2026, 3, 1), None)].target_status == "off_target"


def test_view_shows_every_cell_for_a_lower_target_and_no_status_for_null(
    warehouse: Warehouse, targeted: tuple[SourceSpec, KpiSpec, KpiSpec]
) -> None:
    _, _, price = targeted
    rows = _view_rows(warehouse, price)

    expected = _expected(
        {"day": PRICE_CEILING, "month": PRICE_CEILING}, _ok_average, higher=False, total_only=False
    )
    got = {k: (r.value, r.target, r.target_status) for k, r in rows.items()}
    assert set(got) == set(expected)
    for key, (value, target, status) in expected.items():
        assert got[key][1:] == (target, status), key
        assert (got[key][0] is None) == (value is None), key
        if value is not None:
            assert abs(got[key][0] - value) < Decimal("1e-9"), key
    assert rows[("day", DAYS[0], "north")].target_status == "on_target"  # 4 <= 5
    assert rows[("day", DAYS[0], "south")].target_status == "off_target"  # 6 > 5
    assert rows[("day", DAYS[2], "north")].target_status == "on_target"  # exactly 5
    dst_north = rows[("day", DAYS[1], "north")]
    assert dst_north.value is None and dst_north.target_status is None


def test_changing_the_target_replaces_the_view(
    warehouse: Warehouse, targeted: tuple[SourceSpec, KpiSpec, KpiSpec]
) -> None:
    _, units, _ = targeted
    with warehouse.begin() as conn:
        assert ensure_view(conn, units) is False  # unchanged definition: left alone
    stricter = units.model_copy(
        update={"target": units.target.model_copy(update={"value": Decimal(11)})}  # type: ignore[union-attr]
    )
    with warehouse.begin() as conn:
        assert ensure_view(conn, stricter) is True
    rows = _view_rows(warehouse, stricter)
    assert rows[("day", DAYS[0], None)].target == 11
    assert rows[("day", DAYS[0], None)].target_status == "off_target"  # 10 < 11 now
    dropped = units.model_copy(update={"target": None})
    with warehouse.begin() as conn:
        assert ensure_view(conn, dropped) is True
    assert {r.target_status for r in _view_rows(warehouse, dropped).values()} == {None}


# -- kpi show --------------------------------------------------------------------------------------


def _write_catalog(folder: Path, source: SourceSpec, kpis: list[KpiSpec]) -> Path:
    for sub, key, specs in (("sources", "sources", [source]), ("kpis", "kpis", kpis)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        entries = [s.model_dump(mode="json", exclude_none=True) for s in specs]
        (folder / sub / "test.yaml").write_text(yaml.safe_dump({key: entries}))
    return folder


def _kpi_show(folder: Path, database_url: str, tmp_path: Path, *args: str) -> str:
    done = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "analytics-pipelines"), "kpi", "show", *args],
        env={
            **os.environ,
            "CATALOG_DIR": str(folder),
            "DATABASE_URL": database_url,
            "STORAGE_URL": f"file://{tmp_path}/store",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kpi_show_prints_target_and_status_per_cell(
    targeted: tuple[SourceSpec, KpiSpec, KpiSpec], database_url: str, tmp_path: Path
) -> None:
    source, units, price = targeted
    folder = _write_catalog(tmp_path / "catalog", source, [units, price])
    window = ("--from", "2026-03-28", "--to", "2026-03-30")

    def show(*args: str) -> str:
        return _kpi_show(folder, database_url, tmp_path, *args)

    total = json.loads(show(units.name, *window, "--format", "json"))
    by_region = json.loads(show(price.name, *window, "--by", "region", "--format", "json"))
    # Month rows are those whose period starts in the range.
    table = show(units.name, "--from", "2026-03-01", "--to", "2026-03-31", "--grain", "month")

    day_totals = {
        start: sum(q for q, _, _ in lines)
        for (start, region), lines in _cells("day").items()
        if region is None
    }
    assert [(r["period"], r["value"], r["target"], r["target_status"]) for r in total] == [
        (
            day.isoformat(),
            day_totals[day],
            10,
            _expected_status(Decimal(day_totals[day]), DAY_TARGET, higher=True),
        )
        for day in DAYS
    ]
    statuses = {
        (r["period"], r["region"]): r["target_status"]
        for r in by_region
        if r["breakdown"] == ["region"]
    }
    # `--by` adds each period's total after its breakdown rows.
    assert [r["period"] for r in by_region if r["breakdown"] == []] == [d.isoformat() for d in DAYS]
    assert statuses == {
        ("2026-03-28", "north"): "on_target",
        ("2026-03-28", "south"): "off_target",
        ("2026-03-29", "north"): None,
        ("2026-03-29", "south"): "on_target",
        ("2026-03-30", "north"): "on_target",
        ("2026-03-30", "south"): "on_target",
    }
    assert "target: >= 100 per month (higher is better; the total only)" in table
    month_line = next(line for line in table.splitlines() if line.startswith("2026-03"))
    assert month_line.split() == ["2026-03", "29", "100", "off_target"]


# -- latest complete period ------------------------------------------------------------------------


def test_latest_complete_day_ends_at_the_local_midnight_across_dst(
    warehouse: Warehouse, targeted: tuple[SourceSpec, KpiSpec, KpiSpec]
) -> None:
    _, units, _ = targeted
    # 23:30 on the DST day in Berlin: that day is still running, 28 March is the latest complete.
    late_on_dst_day = dt.datetime(2026, 3, 29, 23, 30, tzinfo=BERLIN)
    # 00:30 the next day: the 23-hour day is complete (it ended at 22:00 UTC).
    after_midnight = dt.datetime(2026, 3, 30, 0, 30, tzinfo=BERLIN)

    with warehouse.connect() as conn:
        before = latest_complete_period(conn, units, "day", late_on_dst_day)
        after = latest_complete_period(conn, units, "day", after_midnight)
        month = latest_complete_period(conn, units, "month", after_midnight)
        next_month = latest_complete_period(
            conn, units, "month", dt.datetime(2026, 4, 1, 0, 0, tzinfo=BERLIN)
        )

    assert (before.period, before.status, before.total) == ("2026-03-28", "on_target", 10)
    assert (after.period, after.status, after.total) == ("2026-03-29", "off_target", 7)
    assert after.period_end.astimezone(dt.UTC) == dt.datetime(2026, 3, 29, 22, tzinfo=dt.UTC)
    assert after.period_start.astimezone(dt.UTC) == dt.datetime(2026, 3, 28, 23, tzinfo=dt.UTC)
    assert after.describe(units) == "day 2026-03-29: 7 off target (>= 10)"
    # February has no value stored; March is complete from 1 April 00:00 Berlin.
    assert (month.period, month.status, month.cells) == ("2026-02", "no_value", [])
    assert (
        month.describe(units) == "month 2026-02: no value yet to compare with the target (>= 100)"
    )
    assert (next_month.period, next_month.status, next_month.total) == ("2026-03", "off_target", 29)


def test_latest_complete_period_of_an_every_cell_target_lists_the_cells_off_target(
    warehouse: Warehouse, targeted: tuple[SourceSpec, KpiSpec, KpiSpec]
) -> None:
    _, _, price = targeted
    with warehouse.connect() as conn:
        first = latest_complete_period(
            conn, price, "day", dt.datetime(2026, 3, 29, 1, tzinfo=BERLIN)
        )
        dst = latest_complete_period(conn, price, "day", dt.datetime(2026, 3, 30, 1, tzinfo=BERLIN))

    averages = {
        region: _ok_average(lines)
        for (day, region), lines in _cells("day").items()
        if day == DAYS[0]
    }
    got = {c.dimensions.get("region"): (c.value, c.status) for c in first.cells}
    assert set(got) == set(averages)
    for region, value in averages.items():
        assert value is not None and abs(got[region][0] - value) < Decimal("1e-9"), region
        assert got[region][1] == _expected_status(value, PRICE_CEILING, higher=False), region
    assert first.status == "off_target"
    assert first.describe(price) == "day 2026-03-28: 1 of 3 cells off target (<= 5): region=south 6"
    # On the DST day north has no 'ok' row (NULL average): it is not judged, the rest is on target.
    assert sorted(c.dimensions.get("region") or "total" for c in dst.cells) == ["south", "total"]
    assert dst.describe(price) == "day 2026-03-29: all 2 cells on target (<= 5)"


def test_latest_complete_hour_tells_the_two_autumn_hours_apart(warehouse: Warehouse) -> None:
    source = make_source(unique("kpi_target_hour"))
    # 25 October 2026 in Berlin: 02:00-03:00 happens twice (+02:00, then +01:00).
    first_two = dt.datetime(2026, 10, 25, 0, 15, tzinfo=dt.UTC)  # 02:15+02:00
    second_two = dt.datetime(2026, 10, 25, 1, 15, tzinfo=dt.UTC)  # 02:15+01:00
    rows = [
        {"line_id": "a", "at": first_two, "qty": 3},
        {"line_id": "b", "at": second_two, "qty": 1},
    ]
    create_clean(warehouse, source, rows)
    kpi = make_kpi(
        unique("hourly"), source.name, measure="sum(qty)", grains=["hour"],
        timezone="Europe/Berlin", target={"direction": "lower", "value": 2},
    )  # fmt: skip
    refresh_kpi(
        warehouse,
        plan_kpi(make_catalog([source], [kpi]), kpi.name),
        dt.date(2026, 10, 25),
        dt.date(2026, 10, 25),
    )

    with warehouse.connect() as conn:
        # During the second 02:00 hour the first one is the latest complete hour.
        first = latest_complete_period(conn, kpi, "hour", second_two + dt.timedelta(minutes=30))
        second = latest_complete_period(conn, kpi, "hour", second_two + dt.timedelta(hours=1))

    assert (first.period, first.total, first.status) == ("2026-10-25 02:00+02:00", 3, "off_target")
    assert (second.period, second.total, second.status) == (
        "2026-10-25 02:00+01:00",
        1,
        "on_target",
    )


# -- the asset check -------------------------------------------------------------------------------


class CheckSetup:
    """A Berlin KPI with day and month targets and rows relative to today (the check reads the
    clock): the latest complete day is yesterday and the latest complete month the last one."""

    def __init__(self, warehouse: Warehouse, yesterday_qty: int, month_qty: int | None) -> None:
        self.today = dt.datetime.now(BERLIN).date()
        self.yesterday = self.today - dt.timedelta(days=1)
        self.last_month = (self.today.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
        self.source = make_source(unique("kpi_target_check"))
        # Today (not complete yet) is far below target: the check must not look at it.
        qty_by_day = {self.today: 1, self.yesterday: yesterday_qty}
        if month_qty is not None:
            # Mid-month of last month unless yesterday is in it (today is the 1st).
            qty_by_day[self.last_month + dt.timedelta(days=9)] = month_qty
        rows = [
            {
                "line_id": f"{day}",
                "at": dt.datetime.combine(day, dt.time(12), BERLIN).astimezone(dt.UTC),
                "region": "north",
                "qty": qty,
            }
            for day, qty in qty_by_day.items()
        ]
        create_clean(warehouse, self.source, rows)
        self.month_total = sum(
            q for d, q in qty_by_day.items() if d.replace(day=1) == self.last_month
        )
        self.kpi = make_kpi(
            unique("units"), self.source.name, measure="sum(qty)", dimensions=["region"],
            grains=["day", "month"], timezone="Europe/Berlin",
            target={"direction": "higher", "value": 10, "by_grain": {"month": 50}},
        )  # fmt: skip
        catalog = make_catalog([self.source], [self.kpi])
        self.built = build_kpi_definitions(catalog, start="2024-01-01")
        self.resources = {"warehouse": WarehouseResource(database_url=str(warehouse.url))}

    def run(self) -> dg.AssetCheckEvaluation:
        asset = [a for a in self.built.assets if a.key == kpi_asset_key(self.kpi.name)]
        result = dg.materialize(
            [*asset, *self.built.checks],
            resources=self.resources,
            tags={
                "dagster/asset_partition_range_start": self.last_month.isoformat(),
                "dagster/asset_partition_range_end": self.today.isoformat(),
            },
        )
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        assert [e.check_name for e in evaluations] == [ON_TARGET_CHECK]
        return evaluations[0]


def test_check_passes_when_the_latest_complete_periods_are_on_target(
    warehouse: Warehouse,
) -> None:
    setup = CheckSetup(warehouse, yesterday_qty=10, month_qty=60)

    evaluation = setup.run()

    assert evaluation.passed, evaluation.description
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    assert metadata["day_period"] == setup.yesterday.isoformat()
    assert metadata["day_value"] == 10 and metadata["day_status"] == "on_target"
    assert metadata["month_period"] == setup.last_month.strftime("%Y-%m")
    assert metadata["month_value"] == setup.month_total >= 50
    assert metadata["direction"] == "higher"
    assert f"day {setup.yesterday}: 10 on target (>= 10)" in (evaluation.description or "")


def test_check_warns_with_period_value_and_target_when_off_target(warehouse: Warehouse) -> None:
    setup = CheckSetup(warehouse, yesterday_qty=4, month_qty=60)

    evaluation = setup.run()

    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    assert (metadata["day_period"], metadata["day_value"], metadata["day_target"]) == (
        setup.yesterday.isoformat(),
        4,
        10,
    )
    assert metadata["day_status"] == "off_target"
    assert metadata["direction"] == "higher"
    assert f"day {setup.yesterday}: 4 off target (>= 10)" in (evaluation.description or "")


def test_check_says_when_the_latest_complete_period_has_no_value_yet(
    warehouse: Warehouse,
) -> None:
    setup = CheckSetup(warehouse, yesterday_qty=12, month_qty=None)
    if setup.yesterday.replace(day=1) == setup.last_month:
        pytest.skip("today is the 1st: yesterday gives last month a value")

    evaluation = setup.run()

    assert evaluation.passed
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    assert metadata["month_status"] == "no_value"
    assert (
        f"month {setup.last_month.strftime('%Y-%m')}: no value yet to compare with the target"
        in (evaluation.description or "")
    )


def test_only_kpis_with_a_target_get_the_check(warehouse: Warehouse) -> None:
    setup = CheckSetup(warehouse, yesterday_qty=1, month_qty=None)
    plain = make_kpi(unique("plain"), setup.source.name, measure="count(*)")
    built = build_kpi_definitions(make_catalog([setup.source], [setup.kpi, plain]))
    assert [c.check_keys for c in built.checks] == [
        {dg.AssetCheckKey(kpi_asset_key(setup.kpi.name), ON_TARGET_CHECK)}
    ]


def test_a_scheduled_refresh_of_today_runs_the_check_too(warehouse: Warehouse) -> None:
    setup = CheckSetup(warehouse, yesterday_qty=4, month_qty=60)
    defs = dg.Definitions(
        assets=setup.built.assets,
        asset_checks=setup.built.checks,
        jobs=list(setup.built.jobs.values()),
        resources=setup.resources,
    )
    job = defs.resolve_job_def(setup.built.jobs["Europe/Berlin"].name)
    refresh_kpi(
        warehouse,
        plan_kpi(make_catalog([setup.source], [setup.kpi]), setup.kpi.name),
        setup.yesterday,
        setup.yesterday,
    )

    # What a schedule tick requests: today's partition of the KPI asset.
    result = job.execute_in_process(
        partition_key=setup.today.isoformat(), asset_selection=[kpi_asset_key(setup.kpi.name)]
    )

    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == ON_TARGET_CHECK and not evaluation.passed
    assert evaluation.metadata["day_period"].value == setup.yesterday.isoformat()


def test_demo_kpis_with_targets_get_the_check() -> None:
    built = build_kpi_definitions(load_catalog(DEMO_CATALOG_DIR), start="2024-01-01")
    checked = {key.asset_key.path[1] for c in built.checks for key in c.check_keys}
    assert checked == {"gross_revenue", "avg_resolution_minutes", "csat_average"}
