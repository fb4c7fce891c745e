"""A failing blocking check (`quarantine_rate` on clean/<source>) holds that source's KPIs:
the sensor, the schedules and a backfill refresh nothing of it and say why; after a quarantine
replay the next sensor tick catches the held periods up. Real PostgreSQL, real clean layer."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from analytics_pipelines.defs.kpis.factory import (
    HELD_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    KpiDefinitions,
    build_kpi_definitions,
    kpi_asset_key,
)
from analytics_pipelines.lib.catalog import SourceSpec
from analytics_pipelines.lib.clean import clean_pending
from analytics_pipelines.lib.clean.replay import replay_quarantine
from analytics_pipelines.lib.kpi.gate import quarantine_verdict
from analytics_pipelines.lib.kpi.invalidation import REQUEUE_WINDOW_SECONDS, SensorCursor
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import WarehouseResource
from analytics_pipelines_tests.test_clean_process import correct, land, make_source, row
from analytics_pipelines_tests.test_clean_replay import with_column
from analytics_pipelines_tests.test_kpi_support import (
    UTC,
    last_touched_id,
    make_catalog,
    make_kpi,
    stored_values,
    unique,
)

DAYS = ("2024-05-01", "2024-05-02", "2024-05-03")


def _orders(prefix: int, day: str, regions: Sequence[str], quantity: int) -> list[dict[str, Any]]:
    return [
        row(
            order_id=f"ORD-{prefix + i:04d}",
            ordered_at=f"{day} 10:00:00",
            region=region,
            quantity=str(quantity),
        )
        for i, region in enumerate(regions)
    ]


def _daily(
    rows: Sequence[dict[str, Any]], timezone: str, how: str = "sum"
) -> dict[dt.datetime, float]:
    """sum or count of quantity per UTC day, from the delivered rows (event times are local to
    the source)."""
    frame = pd.DataFrame(rows)
    moments = pd.to_datetime(frame["ordered_at"]).dt.tz_localize(timezone).dt.tz_convert("UTC")
    frame = frame.assign(day=moments.dt.floor("D"), quantity=frame["quantity"].astype(int))
    return {
        day.to_pydatetime(): float(total)
        for day, total in frame.groupby("day")["quantity"].agg(how).items()
    }


def _day_totals(warehouse: Warehouse, kpi: str) -> dict[dt.datetime, float]:
    return {
        period: float(value)
        for (grain, period, dims), value in stored_values(warehouse, kpi).items()
        if grain == "day" and not dims and value is not None
    }


class Blocking:
    """Source `bad` (gets a file over its quarantine threshold) and source `good`, one UTC KPI
    each on a shared 15-minute schedule, plus a daily KPI of `bad` alone on its own schedule."""

    def __init__(self, warehouse: Warehouse, database_url: str) -> None:
        self.bad = make_source()
        self.good = make_source()
        grains = {"grains": ["day"], "timezone": "UTC", "refresh_cron": "*/15 * * * *"}
        self.bad_units = make_kpi(
            unique("bad_units"), self.bad.name, measure="sum(quantity)", **grains
        )
        self.good_units = make_kpi(
            unique("good_units"), self.good.name, measure="sum(quantity)", **grains
        )
        self.bad_lines = make_kpi(
            unique("bad_lines"), self.bad.name, measure="count(*)", grains=["day"],
            timezone="UTC", refresh_cron="0 6 * * *",
        )  # fmt: skip
        self.kpis = [self.bad_units, self.good_units, self.bad_lines]
        self.catalog = make_catalog([self.bad, self.good], self.kpis)
        self.built: KpiDefinitions = build_kpi_definitions(self.catalog, start="2024-01-01")
        self.resources = {"warehouse": WarehouseResource(database_url=database_url)}
        self.warehouse = warehouse

    def deliver_first(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A first, valid file of each source over DAYS, cleaned: (bad's rows, good's rows)."""
        first_bad = [r for i, day in enumerate(DAYS) for r in _orders(10 * i, day, ["north"], 2)]
        first_good = [r for i, day in enumerate(DAYS) for r in _orders(10 * i, day, ["south"], 3)]
        for source, rows in ((self.bad, first_bad), (self.good, first_good)):
            land(self.warehouse, source, rows)
            clean_pending(self.warehouse, source)
        return first_bad, first_good

    def assets(self, *names: str) -> list[dg.AssetsDefinition]:
        wanted = {kpi_asset_key(n) for n in names}
        return [a for a in self.built.assets if a.key in wanted]

    def tick(self, cursor: str) -> dg.SensorResult:
        assert self.built.sensor is not None
        context = dg.build_sensor_context(
            cursor=cursor, resources=self.resources, instance=dg.DagsterInstance.ephemeral()
        )
        result = self.built.sensor(context)
        assert isinstance(result, dg.SensorResult)
        return result

    def refresh(self, names: Sequence[str], first: str, last: str) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            self.assets(*names),
            resources=self.resources,
            tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
            raise_on_error=False,
        )


def _requested(result: dg.SensorResult) -> dict[str, set[str]]:
    """Requested partitions (or 'start..end') -> KPI names selected."""
    out: dict[str, set[str]] = {}
    for request in result.run_requests or []:
        assert isinstance(request, dg.RunRequest)
        key = request.partition_key or (
            f"{request.tags[RANGE_START_TAG]}..{request.tags[RANGE_END_TAG]}"
        )
        out[key] = {k.path[1] for k in request.asset_selection or []}
    return out


def _reason(source: SourceSpec, quarantined: int, rows: int, rate: str) -> str:
    return (
        f"blocked by check quarantine_rate on clean/{source.name}: {quarantined} of {rows} rows "
        f"of the latest clean run quarantined, rate {rate} > threshold 5.0%; "
        f"see `analytics-pipelines quarantine show {source.name}`"
    )


def test_a_failing_blocking_check_holds_its_kpis_until_a_replay_clears_it(
    warehouse: Warehouse, database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    setup = Blocking(warehouse, database_url)
    bad, good = setup.bad, setup.good
    # A first, clean delivery of each source, refreshed: the values a block must keep.
    first_bad, first_good = setup.deliver_first()
    names = [k.name for k in setup.kpis]
    assert setup.refresh(names, DAYS[0], DAYS[-1]).success
    before = _day_totals(warehouse, setup.bad_units.name)
    assert before == _daily(first_bad, bad.timezone)
    cursor = SensorCursor.parse(str(last_touched_id(warehouse))).serialise()

    # `bad` gets a file with 2 of 4 rows quarantined (region west): 50% > 5%. `good` a new file.
    second_bad = _orders(100, DAYS[1], ["north", "west", "south", "west"], 5)
    land(warehouse, bad, second_bad)
    clean_pending(warehouse, bad)
    second_good = _orders(100, DAYS[2], ["north"], 7)
    land(warehouse, good, second_good)
    clean_pending(warehouse, good)
    assert not quarantine_verdict(warehouse, bad).passed
    reason = _reason(bad, 2, 4, "50.0%")

    # Sensor: `good` refreshes in the same tick; nothing of `bad`, whose cursor stays.
    capfd.readouterr()
    mixed = setup.tick(cursor)
    tick_log = capfd.readouterr().err  # the sensor's context.log (the tick's log in the UI)
    assert _requested(mixed) == {DAYS[2]: {setup.good_units.name}}
    held = f"touched periods of {bad.name} kept pending"
    assert held in tick_log and reason in tick_log
    assert mixed.cursor is not None
    moved = SensorCursor.parse(mixed.cursor)
    assert moved.after(bad.name) == SensorCursor.parse(cursor).after(bad.name)
    assert moved.after(good.name) == last_touched_id(warehouse)
    [good_request] = mixed.run_requests or []
    assert dg.materialize(
        setup.assets(setup.good_units.name),
        partition_key=good_request.partition_key,
        resources=setup.resources,
    ).success
    assert _day_totals(warehouse, setup.good_units.name) == _daily(
        first_good + second_good, good.timezone
    )

    # Next tick: only `bad` has news and it is blocked -> a skip that names source, check, rate.
    only_bad = setup.tick(mixed.cursor)
    assert not only_bad.run_requests
    assert only_bad.skip_reason is not None
    skip = only_bad.skip_reason.skip_message or ""
    assert held in skip and reason in skip
    assert setup.bad_units.name in skip and setup.bad_lines.name in skip
    assert only_bad.cursor == mixed.cursor

    # Schedules: the shared one refreshes only `good`; the one of `bad` alone skips, saying why.
    schedules = {s.cron_schedule: s for s in setup.built.schedules}
    moment = dt.datetime(2024, 5, 3, 12, 15, tzinfo=UTC)
    shared = schedules["*/15 * * * *"](
        dg.build_schedule_context(scheduled_execution_time=moment, resources=setup.resources)
    )
    assert isinstance(shared, dg.RunRequest)
    assert shared.partition_key == DAYS[2]
    assert set(shared.asset_selection or []) == {kpi_asset_key(setup.good_units.name)}
    assert reason in shared.tags[HELD_TAG] and setup.bad_units.name in shared.tags[HELD_TAG]
    alone = schedules["0 6 * * *"](
        dg.build_schedule_context(scheduled_execution_time=moment, resources=setup.resources)
    )
    assert isinstance(alone, dg.SkipReason)
    assert reason in (alone.skip_message or "") and setup.bad_lines.name in (
        alone.skip_message or ""
    )

    # A backfill of `bad` over the three days: a red run that says why; values unchanged.
    backfill = setup.refresh([setup.bad_units.name], DAYS[0], DAYS[-1])
    assert not backfill.success
    [failure] = [e for e in backfill.all_events if e.is_step_failure]
    assert failure.step_failure_data.user_failure_data is not None
    description = failure.step_failure_data.user_failure_data.description or ""
    assert description == (
        f"kpi {setup.bad_units.name} not refreshed for {DAYS[0]}..{DAYS[-1]}: {reason}"
    )
    assert not backfill.get_asset_materialization_events()
    assert _day_totals(warehouse, setup.bad_units.name) == before

    # The catalog owner allows region west; the replay releases the rows and the check passes.
    fixed = with_column(bad, "region", allowed_values=["north", "south", "west"])
    assert replay_quarantine(warehouse, fixed).released == 2
    assert quarantine_verdict(warehouse, bad).passed

    # The next tick requests the held day for every KPI of `bad`, with no operator action.
    caught_up = setup.tick(only_bad.cursor or "")
    assert _requested(caught_up) == {DAYS[1]: {setup.bad_units.name, setup.bad_lines.name}}
    assert caught_up.cursor is not None
    assert SensorCursor.parse(caught_up.cursor).after(bad.name) == last_touched_id(warehouse)
    for request in caught_up.run_requests or []:
        assert isinstance(request, dg.RunRequest)
        run = dg.materialize(
            setup.assets(*(k.path[1] for k in request.asset_selection or [])),
            partition_key=request.partition_key,
            resources=setup.resources,
        )
        assert run.success
    delivered = first_bad + second_bad
    assert _day_totals(warehouse, setup.bad_units.name) == _daily(delivered, bad.timezone, "sum")
    assert _day_totals(warehouse, setup.bad_lines.name) == _daily(delivered, bad.timezone, "count")


def test_a_refused_run_and_a_derived_kpi_catch_up_after_a_corrected_file(
    warehouse: Warehouse, database_url: str
) -> None:
    setup = Blocking(warehouse, database_url)
    bad, good = setup.bad, setup.good
    share = make_kpi(
        unique("good_per_bad"), good.name, derived=f"{setup.good_units.name} / "
        f"{setup.bad_units.name}", grains=["day"], timezone="UTC",
    )  # fmt: skip
    setup.catalog = make_catalog([bad, good], [setup.bad_units, setup.good_units, share])
    setup.built = build_kpi_definitions(setup.catalog, start="2024-01-01")
    first_bad, first_good = setup.deliver_first()
    assert setup.refresh([setup.bad_units.name, setup.good_units.name], DAYS[0], DAYS[-1]).success
    assert setup.refresh([share.name], DAYS[0], DAYS[-1]).success
    start = SensorCursor.parse(str(last_touched_id(warehouse))).serialise()

    # A late, valid file of `bad`: the tick requests its day; the run waits in the queue...
    late = _orders(200, DAYS[0], ["south"], 4)
    land(warehouse, bad, late)
    clean_pending(warehouse, bad)
    queued = setup.tick(start)
    # (the derived KPI reads bad_units: it is refreshed with it.)
    assert _requested(queued) == {DAYS[0]: {setup.bad_units.name, share.name}}
    [request] = queued.run_requests or []
    # ...while a file of `bad` arrives with every row quarantined (it touches no period).
    rejected = _orders(300, DAYS[2], ["west", "west"], 9)
    rejected_id = land(warehouse, bad, rejected)
    clean_pending(warehouse, bad)
    assert not quarantine_verdict(warehouse, bad).passed
    refused = dg.materialize(
        setup.assets(*(k.path[1] for k in request.asset_selection or [])),
        partition_key=request.partition_key,
        resources=setup.resources,
        raise_on_error=False,
    )
    assert not refused.success
    assert _day_totals(warehouse, setup.bad_units.name) == _daily(first_bad, bad.timezone)

    # `good` gets a file: good_units refreshes, the KPI derived from bad_units is held.
    more_good = _orders(400, DAYS[1], ["north"], 6)
    land(warehouse, good, more_good)
    clean_pending(warehouse, good)
    held = setup.tick(queued.cursor or "")
    assert _requested(held) == {DAYS[1]: {setup.good_units.name}}
    for run_request in held.run_requests or []:
        assert isinstance(run_request, dg.RunRequest)
        assert dg.materialize(
            setup.assets(setup.good_units.name),
            partition_key=run_request.partition_key,
            resources=setup.resources,
        ).success
    moved = SensorCursor.parse(held.cursor)
    # Both kept pending; `bad` went back to before the refused run's batch.
    assert moved.after(bad.name) == SensorCursor.parse(start).after(bad.name)
    assert moved.after(good.name) == SensorCursor.parse(start).after(good.name)

    # The sender corrects the rejected file (same key, valid rows): the check passes, and the
    # next tick brings back the refused day, the corrected day and the held derived KPI.
    corrected = _orders(300, DAYS[2], ["north", "south"], 9)
    correct(warehouse, bad, rejected_id, corrected)
    clean_pending(warehouse, bad)
    assert quarantine_verdict(warehouse, bad).passed
    caught_up = setup.tick(held.cursor or "")
    assert _requested(caught_up) == {
        DAYS[0]: {setup.bad_units.name, share.name},
        DAYS[2]: {setup.bad_units.name, share.name},
        DAYS[1]: {setup.good_units.name, share.name},
    }
    # Released requests get run keys of their own: Dagster never dedups them against a refused run.
    bad_keys = [
        r.run_key or "" for r in caught_up.run_requests or [] if bad.name in (r.run_key or "")
    ]
    assert len(bad_keys) == 2 and all(":released_" in k for k in bad_keys)
    for run_request in caught_up.run_requests or []:
        assert isinstance(run_request, dg.RunRequest)
        assert dg.materialize(
            setup.assets(*(k.path[1] for k in run_request.asset_selection or [])),
            partition_key=run_request.partition_key,
            resources=setup.resources,
        ).success

    bad_expected = _daily(first_bad + late + corrected, bad.timezone)
    good_expected = _daily(first_good + more_good, good.timezone)
    assert _day_totals(warehouse, setup.bad_units.name) == bad_expected
    assert _day_totals(warehouse, setup.good_units.name) == good_expected
    assert _day_totals(warehouse, share.name) == pytest.approx(
        {day: good_expected[day] / bad_expected[day] for day in good_expected}
    )


def test_cursor_goes_back_only_over_recent_requests_and_only_when_a_block_starts() -> None:
    now = 1_000_000.0
    cursor = (
        SensorCursor(sources={"orders": 10})
        .with_requests({"orders": 10}, now - REQUEUE_WINDOW_SECONDS - 60)  # too old
        .advanced({"orders": 20})
        .with_requests({"orders": 20}, now - 60)
        .advanced({"orders": 30})
    )
    held = SensorCursor.parse(cursor.holding({"orders"}, now).serialise())
    assert (held.after("orders"), held.held) == (20, frozenset({"orders"}))
    # Still held on the next tick: no second step back; released: nothing moves.
    assert held.advanced({"orders": 25}).holding({"orders"}, now).after("orders") == 25
    assert held.holding(set(), now).after("orders") == 20
    assert held.holding(set(), now).held == frozenset()
