"""KPI assets, schedules and the invalidation sensor, executed in-process against PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from analytics_pipelines.defs.kpis.factory import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    SENSOR_NAME,
    KpiDefinitions,
    build_kpi_definitions,
    kpi_asset_key,
)
from analytics_pipelines.lib.catalog import load_catalog
from analytics_pipelines.lib.kpi.engine import refresh_kpi
from analytics_pipelines.lib.kpi.invalidation import CursorError, SensorCursor
from analytics_pipelines.lib.kpi.plan import plan_kpi
from analytics_pipelines.lib.kpi.statements import INSERT_MARKER
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR
from analytics_pipelines.lib.tables import clean_table, kpi_values, ledger, touched_periods
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import WarehouseResource
from analytics_pipelines_tests.test_kpi_support import (
    UTC,
    create_clean,
    insert_clean,
    last_touched_id,
    make_catalog,
    make_kpi,
    make_source,
    record_touched,
    statements_run,
    stored_values,
    unique,
)


def _rows(days: list[dt.date], per_day: int = 4, qty: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "line_id": f"{day}-{i}-{qty}",
            "at": dt.datetime(day.year, day.month, day.day, 6 + i, tzinfo=UTC),
            "region": "north" if i % 2 else "south",
            "qty": qty,
        }
        for day in days
        for i in range(per_day)
    ]


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


class Setup:
    def __init__(self, warehouse: Warehouse) -> None:
        self.source = make_source(unique("kpi_dg"))
        self.units = make_kpi(
            unique("units"), self.source.name, measure="sum(qty)", dimensions=["region"],
            grains=["day", "month"], timezone="Europe/Berlin", refresh_cron="*/15 * * * *",
        )  # fmt: skip
        self.lines = make_kpi(
            unique("lines"), self.source.name, measure="count(*)", dimensions=["region"],
            grains=["day", "month"], timezone="Europe/Berlin", refresh_cron="*/15 * * * *",
        )  # fmt: skip
        self.per_line = make_kpi(
            unique("per_line"), self.source.name, derived=f"{self.units.name} / {self.lines.name}",
            dimensions=["region"], grains=["day", "month"], timezone="Europe/Berlin",
            refresh_cron="0 6 * * *",
        )  # fmt: skip
        self.utc_units = make_kpi(
            unique("utc_units"), self.source.name, measure="sum(qty)", timezone="UTC",
            refresh_cron="*/15 * * * *",
        )  # fmt: skip
        self.catalog = make_catalog(
            [self.source], [self.units, self.lines, self.per_line, self.utc_units]
        )
        self.built: KpiDefinitions = build_kpi_definitions(self.catalog, start="2024-01-01")
        self.resources = {"warehouse": WarehouseResource(database_url=str(warehouse.url))}

    def assets(self, *names: str) -> list[dg.AssetsDefinition]:
        wanted = {kpi_asset_key(n) for n in names}
        return [a for a in self.built.assets if a.key in wanted]


@pytest.fixture
def setup(warehouse: Warehouse) -> Setup:
    return Setup(warehouse)


def test_assets_are_partitioned_grouped_and_depend_on_clean_and_inputs(setup: Setup) -> None:
    by_key = {a.key: a for a in setup.built.assets}
    derived = by_key[kpi_asset_key(setup.per_line.name)]
    assert derived.group_names_by_key[derived.key] == "test_chain"
    # Its inputs read the clean table; the derived KPI reads their values.
    assert set(derived.asset_deps[derived.key]) == {
        kpi_asset_key(setup.units.name),
        kpi_asset_key(setup.lines.name),
    }
    partitions = derived.partitions_def
    assert isinstance(partitions, dg.DailyPartitionsDefinition)
    assert partitions.timezone == "Europe/Berlin"
    assert partitions.get_first_partition_key() == "2024-01-01"
    assert derived.backfill_policy == dg.BackfillPolicy.single_run()
    assert derived.descriptions_by_key[derived.key] == f"test KPI {setup.per_line.name}"
    utc = by_key[kpi_asset_key(setup.utc_units.name)].partitions_def
    assert isinstance(utc, dg.DailyPartitionsDefinition) and utc.timezone == "UTC"
    defs = dg.Definitions(
        assets=setup.built.assets,
        schedules=setup.built.schedules,
        sensors=[setup.built.sensor] if setup.built.sensor else [],
        resources=setup.resources,
    )
    dg.Definitions.validate_loadable(defs)


def test_demo_catalog_builds_one_asset_per_kpi() -> None:
    catalog = load_catalog(DEMO_CATALOG_DIR)
    built = build_kpi_definitions(catalog)
    assert len(built.assets) == len(catalog.kpis) >= 10
    groups = {a.key.path[1]: a.group_names_by_key[a.key] for a in built.assets}
    assert groups == {k.name: k.value_chain for k in catalog.kpis.values()}
    assert {job.name for job in built.jobs.values()} == {
        "kpi_refresh_europe_berlin",
        "kpi_refresh_utc",
    }


def test_materialising_a_day_writes_every_grain_and_a_preview(
    warehouse: Warehouse, setup: Setup
) -> None:
    create_clean(warehouse, setup.source, _rows(_days(dt.date(2026, 3, 1), dt.date(2026, 3, 31))))
    names = (setup.units.name, setup.lines.name, setup.per_line.name)

    result = dg.materialize(
        setup.assets(*names), partition_key="2026-03-29", resources=setup.resources
    )

    assert result.success
    events = {
        e.asset_key.path[1]: e.materialization.metadata  # type: ignore[union-attr]
        for e in result.get_asset_materialization_events()
    }
    assert set(events) == set(names)
    units = events[setup.units.name]
    # Day and month, each: north, south and the total.
    assert units["rows_day"].value == 3 and units["rows_month"].value == 3
    assert "region=north" in str(units["preview"].value)
    # The Berlin day of the partition, as people write it, not the UTC instant it starts at.
    assert "| 2026-03-29 | region=north |" in str(units["preview"].value)
    assert "T23:00:00" not in str(units["preview"].value)
    stored = stored_values(warehouse, setup.per_line.name)
    berlin_day = dt.datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert stored[("day", berlin_day, frozenset())] == Decimal(1)
    assert stored[("month", dt.datetime(2026, 2, 28, 23, tzinfo=UTC), frozenset())] == Decimal(1)


def test_backfill_of_a_range_is_one_run_with_one_statement_per_grain(
    warehouse: Warehouse, setup: Setup
) -> None:
    days = _days(dt.date(2026, 1, 1), dt.date(2026, 2, 28))
    create_clean(warehouse, setup.source, _rows(days))
    assets = setup.assets(setup.units.name)

    with statements_run() as statements:
        result = dg.materialize(
            assets,
            resources=setup.resources,
            tags={RANGE_START_TAG: "2026-01-01", RANGE_END_TAG: "2026-02-28"},
        )

    assert result.success
    partitions = {e.partition for e in result.get_asset_materialization_events()}
    assert partitions == {d.isoformat() for d in days}
    # Days and months of two whole months: one statement reads the clean rows once.
    assert len([s for s in statements if s.startswith(INSERT_MARKER)]) == 1
    stored = stored_values(warehouse, setup.units.name)
    assert len([k for k in stored if k[0] == "day" and not k[2]]) == len(days)
    assert stored[("month", dt.datetime(2026, 1, 31, 23, tzinfo=UTC), frozenset())] == 4 * 28


def _sensor_context(database_url: str, cursor: int | str) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(
        cursor=str(cursor),
        resources={"warehouse": WarehouseResource(database_url=database_url)},
        instance=dg.DagsterInstance.ephemeral(),
    )


def _evaluate(
    setup: Setup | KpiDefinitions, database_url: str, cursor: int | str | None
) -> dg.SensorResult | dg.SkipReason:
    built = setup.built if isinstance(setup, Setup) else setup
    assert built.sensor is not None and built.sensor.name == SENSOR_NAME
    result = built.sensor(_sensor_context(database_url, "" if cursor is None else cursor))
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    return result


def _requests(result: Any) -> dict[tuple[str, str], dg.RunRequest]:
    """Run requests by (job, partition or 'start..end')."""
    assert isinstance(result, dg.SensorResult)
    out = {}
    for request in result.run_requests or []:
        assert isinstance(request, dg.RunRequest)
        if request.partition_key:
            key = request.partition_key
        else:
            key = f"{request.tags[RANGE_START_TAG]}..{request.tags[RANGE_END_TAG]}"
        out[(request.job_name or "", key)] = request
    return out


def _computed_at(warehouse: Warehouse, kpi: str) -> dict[tuple[str, dt.datetime], dt.datetime]:
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.select(
                kpi_values.c.grain, kpi_values.c.period_start, kpi_values.c.computed_at
            ).where(kpi_values.c.kpi == kpi, sa.cast(kpi_values.c.dimensions, sa.Text) == "{}")
        ).all()
    return {(r.grain, r.period_start): r.computed_at for r in rows}


def test_late_data_refreshes_only_the_touched_partitions(
    warehouse: Warehouse, database_url: str, setup: Setup
) -> None:
    days = _days(dt.date(2026, 2, 1), dt.date(2026, 3, 31))
    create_clean(warehouse, setup.source, _rows(days))
    plan = plan_kpi(setup.catalog, setup.units.name)
    refresh_kpi(warehouse, plan, days[0], days[-1])
    before = _computed_at(warehouse, setup.units.name)
    cursor = last_touched_id(warehouse)

    # A late file for last month: two more units on 10 February (09:00 UTC).
    with warehouse.begin() as conn:
        insert_clean(conn, setup.source, _rows([dt.date(2026, 2, 10)], per_day=1, qty=2))
    record_touched(warehouse, setup.source.name, [dt.datetime(2026, 2, 10, 6, tzinfo=UTC)])

    result = _evaluate(setup, database_url, cursor)

    requests = _requests(result)
    assert set(requests) == {
        ("kpi_refresh_europe_berlin", "2026-02-10"),
        ("kpi_refresh_utc", "2026-02-10"),
    }
    berlin = requests[("kpi_refresh_europe_berlin", "2026-02-10")]
    assert set(berlin.asset_selection or []) == {
        kpi_asset_key(n) for n in (setup.units.name, setup.lines.name, setup.per_line.name)
    }
    assert isinstance(result, dg.SensorResult)
    # An old integer cursor is read as "every source at that id"; the new one is per source.
    assert SensorCursor.parse(result.cursor).after(setup.source.name) == last_touched_id(warehouse)

    run = dg.materialize(
        setup.assets(setup.units.name),
        partition_key=berlin.partition_key,
        resources=setup.resources,
    )
    assert run.success
    after = _computed_at(warehouse, setup.units.name)
    feb10 = ("day", dt.datetime(2026, 2, 9, 23, tzinfo=UTC))
    february = ("month", dt.datetime(2026, 1, 31, 23, tzinfo=UTC))
    changed = {key for key in before if after[key] != before[key]}
    assert changed == {feb10, february}
    stored = stored_values(warehouse, setup.units.name)
    assert stored[(*feb10, frozenset())] == 4 + 2
    assert stored[(*february, frozenset())] == 4 * 28 + 2

    # Nothing new: the next tick does nothing.
    assert isinstance(_evaluate(setup, database_url, result.cursor), dg.SkipReason)


def test_corrected_file_refreshes_the_days_of_both_versions(
    warehouse: Warehouse, database_url: str, setup: Setup
) -> None:
    create_clean(warehouse, setup.source, _rows(_days(dt.date(2026, 3, 1), dt.date(2026, 3, 10))))
    cursor = last_touched_id(warehouse)
    key = f"landing/{setup.source.name}/orders.csv"
    # Version 1 covered 1-3 March; its correction (same key) covers 5 March, late in the UTC
    # evening: 23:30 UTC is already 6 March in Berlin.
    record_touched(
        warehouse,
        setup.source.name,
        [dt.datetime(2026, 3, d, 10, tzinfo=UTC) for d in (1, 2, 3)],
        object_key=key,
    )
    record_touched(
        warehouse, setup.source.name, [dt.datetime(2026, 3, 5, 23, 30, tzinfo=UTC)], object_key=key
    )

    result = _evaluate(setup, database_url, cursor)

    requests = _requests(result)
    assert set(requests) == {
        ("kpi_refresh_europe_berlin", "2026-03-01..2026-03-03"),
        ("kpi_refresh_europe_berlin", "2026-03-06"),
        ("kpi_refresh_utc", "2026-03-01..2026-03-03"),
        ("kpi_refresh_utc", "2026-03-05"),
    }
    ranged = requests[("kpi_refresh_europe_berlin", "2026-03-01..2026-03-03")]
    assert ranged.run_key and ranged.run_key.startswith(f"kpi:{setup.source.name}:Europe/Berlin:")

    run = dg.materialize(
        setup.assets(setup.units.name), resources=setup.resources, tags=dict(ranged.tags)
    )
    assert run.success
    assert {e.partition for e in run.get_asset_materialization_events()} == {
        "2026-03-01",
        "2026-03-02",
        "2026-03-03",
    }


def test_sensor_ignores_other_sources(
    warehouse: Warehouse, database_url: str, setup: Setup
) -> None:
    cursor = last_touched_id(warehouse)
    record_touched(warehouse, unique("other_source"), [dt.datetime(2026, 3, 1, tzinfo=UTC)])
    result = _evaluate(setup, database_url, cursor)
    assert isinstance(result, dg.SkipReason)


def test_a_load_committing_after_a_later_load_of_another_source_is_not_skipped(
    warehouse: Warehouse, database_url: str
) -> None:
    """Two loads of different sources in flight: the one with the lower id commits last."""
    slow, fast = make_source(unique("kpi_slow")), make_source(unique("kpi_fast"))
    slow_kpi = make_kpi(unique("slow_units"), slow.name, measure="count(*)", timezone="UTC")
    fast_kpi = make_kpi(unique("fast_units"), fast.name, measure="count(*)", timezone="UTC")
    built = build_kpi_definitions(
        make_catalog([slow, fast], [slow_kpi, fast_kpi]), start="2024-01-01"
    )
    first = _evaluate(built, database_url, last_touched_id(warehouse))
    assert isinstance(first, dg.SkipReason)
    cursor = str(last_touched_id(warehouse))

    with warehouse.engine.connect() as slow_load:
        pending = slow_load.begin()
        file_id = slow_load.execute(
            ledger.insert()
            .values(source=slow.name, object_key=f"landing/{slow.name}/late.csv", etag="e1",
                    size_bytes=1, status="loaded")
            .returning(ledger.c.file_id)
        ).scalar_one()  # fmt: skip
        slow_id = slow_load.execute(
            touched_periods.insert()
            .values(source=slow.name, file_id=file_id,
                    slot_start=dt.datetime(2026, 4, 2, 9, tzinfo=UTC))
            .returning(touched_periods.c.id)
        ).scalar_one()  # fmt: skip
        # The other source's load starts later (higher id) and commits first.
        record_touched(warehouse, fast.name, [dt.datetime(2026, 4, 3, 9, tzinfo=UTC)])
        assert last_touched_id(warehouse) > slow_id

        tick = _evaluate(built, database_url, cursor)
        assert set(_requests(tick)) == {("kpi_refresh_utc", "2026-04-03")}
        assert isinstance(tick, dg.SensorResult) and tick.cursor
        cursor = tick.cursor

        pending.commit()

    tick = _evaluate(built, database_url, cursor)
    assert set(_requests(tick)) == {("kpi_refresh_utc", "2026-04-02")}
    request = next(iter(_requests(tick).values()))
    assert set(request.asset_selection or []) == {kpi_asset_key(slow_kpi.name)}
    assert isinstance(tick, dg.SensorResult)
    assert isinstance(_evaluate(built, database_url, tick.cursor), dg.SkipReason)


def test_sensor_cursor_formats() -> None:
    old = SensorCursor.parse("41")
    assert (old.after("orders"), old.after("anything")) == (41, 41)
    moved = old.advanced({"orders": 50})
    again = SensorCursor.parse(moved.serialise())
    assert (again.after("orders"), again.after("tickets")) == (50, 41)
    assert SensorCursor.parse(None).after("orders") == 0
    with pytest.raises(CursorError, match="KPI sensor cursor 'abc' is invalid"):
        SensorCursor.parse("abc")


def test_schedules_target_the_current_local_day(setup: Setup) -> None:
    schedules = {s.name: s for s in setup.built.schedules}
    assert set(schedules) == {
        "kpi_refresh_every_15_minutes_europe_berlin",
        "kpi_refresh_daily_at_0600_europe_berlin",
        "kpi_refresh_every_15_minutes_utc",
    }
    berlin = schedules["kpi_refresh_every_15_minutes_europe_berlin"]
    assert berlin.cron_schedule == "*/15 * * * *"
    assert berlin.execution_timezone == "Europe/Berlin"
    assert berlin.default_status == dg.DefaultScheduleStatus.RUNNING

    # 23:30 UTC on 28 March is 00:30 on 29 March in Berlin.
    moment = dt.datetime(2026, 3, 28, 23, 30, tzinfo=UTC)
    request = berlin(
        dg.build_schedule_context(scheduled_execution_time=moment, resources=setup.resources)
    )
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "2026-03-29"
    assert set(request.asset_selection or []) == {
        kpi_asset_key(setup.units.name),
        kpi_asset_key(setup.lines.name),
    }
    utc_request = schedules["kpi_refresh_every_15_minutes_utc"](
        dg.build_schedule_context(scheduled_execution_time=moment, resources=setup.resources)
    )
    assert isinstance(utc_request, dg.RunRequest)
    assert utc_request.partition_key == "2026-03-28"

    # Evaluated as the daemon does, the partition is valid for the job it targets.
    defs = dg.Definitions(
        assets=setup.built.assets, schedules=setup.built.schedules, resources=setup.resources
    )
    daily = defs.resolve_schedule_def("kpi_refresh_daily_at_0600_europe_berlin")
    with dg.instance_for_test() as instance:
        data = daily.evaluate_tick(
            dg.build_schedule_context(
                instance=instance,
                scheduled_execution_time=dt.datetime(2026, 10, 25, 5, tzinfo=UTC),
                repository_def=defs.get_repository_def(),
                resources=setup.resources,
            )
        )
    assert [r.partition_key for r in data.run_requests or []] == ["2026-10-25"]


def test_clean_table_helper_matches_the_clean_contract(setup: Setup) -> None:
    # The tests create clean tables exactly as the clean layer's contract shapes them.
    columns = [c.name for c in clean_table(setup.source).columns]
    assert columns[-3:] == ["_file_id", "_line", "_cleaned_at"]
