"""The `clean/<source>` asset and its checks, materialised by Dagster against the test database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from analytics_pipelines.defs.clean.assets import build_clean_asset
from analytics_pipelines.defs.clean.checks import (
    PRIMARY_KEY_UNIQUE,
    QUARANTINE_RATE,
    RECONCILIATION,
    build_clean_checks,
)
from analytics_pipelines.defs.ingest.sensors import raw_asset_key
from analytics_pipelines.lib.catalog import SourceSpec
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import WarehouseResource
from analytics_pipelines_tests.test_clean_process import land, make_source, row


def materialise(
    database_url: str, source: SourceSpec, extra: Sequence[dg.AssetsDefinition] = ()
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [build_clean_asset(source), *build_clean_checks(source), *extra],
        resources={"warehouse": WarehouseResource(database_url=database_url)},
        raise_on_error=False,
    )


def materialised(result: dg.ExecuteInProcessResult) -> dict[dg.AssetKey, Mapping[str, Any]]:
    return {
        e.asset_key: e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key is not None
    }


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_asset_shape_follows_the_contract() -> None:
    source = make_source(freshness_hours=6)
    asset = build_clean_asset(source)
    key = dg.AssetKey(["clean", source.name])
    spec = next(iter(asset.specs))
    assert asset.key == key
    assert raw_asset_key(source.name) in {d.asset_key for d in spec.deps}
    assert spec.group_name == "testing"
    assert spec.kinds == {"postgres"}
    assert spec.freshness_policy is not None
    names = {c.name for c in build_clean_checks(source)[0].check_specs} | {
        spec.name for check in build_clean_checks(source)[1:] for spec in check.check_specs
    }
    assert names == {RECONCILIATION, PRIMARY_KEY_UNIQUE, QUARANTINE_RATE}


def test_materialisation_reports_counts_and_checks_pass(
    warehouse: Warehouse, database_url: str
) -> None:
    source = make_source(max_quarantine_rate=0.5)
    land(warehouse, source, [row(), row(), row(line_no="2"), row(line_no="3", region="west")])

    result = materialise(database_url, source)

    assert result.success
    metadata = materialised(result)[dg.AssetKey(["clean", source.name])]
    assert metadata["clean_rows"].value == 2
    assert metadata["quarantined_rows"].value == 1
    assert metadata["replaced_rows"].value == 1
    assert "ORD-0001" in str(metadata["preview"].value)
    assert check_results(result) == {
        RECONCILIATION: True,
        PRIMARY_KEY_UNIQUE: True,
        QUARANTINE_RATE: True,
    }


def test_failing_quarantine_rate_blocks_downstream_kpis(
    warehouse: Warehouse, database_url: str
) -> None:
    def stand_in_for(spec: SourceSpec) -> dg.AssetsDefinition:
        @dg.asset(key=["kpi", f"{spec.name}_stand_in"], deps=[["clean", spec.name]])
        def stand_in_kpi() -> None:
            return None

        return stand_in_kpi

    strict = make_source(max_quarantine_rate=0.2)
    land(warehouse, strict, [row(), row(line_no="2", region="west")])
    blocked = materialise(database_url, strict, [stand_in_for(strict)])

    assert check_results(blocked)[QUARANTINE_RATE] is False
    assert dg.AssetKey(["clean", strict.name]) in materialised(blocked)
    assert dg.AssetKey(["kpi", f"{strict.name}_stand_in"]) not in materialised(blocked)

    # The same data under a looser threshold lets the KPI refresh.
    loose = make_source(max_quarantine_rate=0.6)
    land(warehouse, loose, [row(), row(line_no="2", region="west")])
    passed = materialise(database_url, loose, [stand_in_for(loose)])

    assert check_results(passed)[QUARANTINE_RATE] is True
    assert dg.AssetKey(["kpi", f"{loose.name}_stand_in"]) in materialised(passed)


def test_schema_drift_fails_the_run_with_the_message(
    warehouse: Warehouse, database_url: str
) -> None:
    source = make_source()
    land(warehouse, source, [row()])
    assert materialise(database_url, source).success

    changed = source.model_copy(update={"primary_key": ["order_id"]})
    land(warehouse, changed, [row(line_no="2")])
    result = materialise(database_url, changed)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "schema drift" in str(failure.step_failure_data.error)


def test_row_count_is_the_clean_tables_total_after_two_loads(
    warehouse: Warehouse, database_url: str
) -> None:
    source = make_source()
    first = [row(order_id=f"ORD-{i:04d}") for i in range(1, 4)]
    # The second delivery repeats one key (replaced, not added) and brings two new ones.
    second = [row(order_id="ORD-0002", quantity="9")] + [
        row(order_id=f"ORD-{i:04d}") for i in range(4, 6)
    ]
    land(warehouse, source, first)
    one = materialised(materialise(database_url, source))[dg.AssetKey(["clean", source.name])]
    land(warehouse, source, second)
    two = materialised(materialise(database_url, source))[dg.AssetKey(["clean", source.name])]

    distinct_keys = {(r["order_id"], r["line_no"]) for r in first + second}
    assert (one["dagster/row_count"].value, one["rows_this_run"].value) == (3, len(first))
    assert (two["dagster/row_count"].value, two["rows_this_run"].value) == (
        len(distinct_keys),
        len(second),
    )
