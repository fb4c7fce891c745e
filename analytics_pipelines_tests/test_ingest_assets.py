"""raw/raw_<source> as Dagster sees it: materialised by hand, metadata, the readable-files check, jobs."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest

from analytics_pipelines.defs.ingest.assets import FILES_READABLE, build_raw_asset, raw_asset_key
from analytics_pipelines.defs.ingest.sensors import (
    build_ingest_job,
    build_landing_sensor,
    raw_op_name,
)
from analytics_pipelines.lib.storage import LocalFolderStore, ObjectStore, S3Store
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import ObjectStoreResource, WarehouseResource
from analytics_pipelines_tests.test_ingest_helpers import (
    key_of,
    ledger_rows,
    make_source,
    raw_rows,
    values,
)

GOOD = (
    b"order_id,ordered_at,region,amount,coupon\nA,2024-03-01,north,1,XMAS\nB,2024-03-02,south,2,\n"
)
BAD = b"order_id,ordered_at,region,amount\nC,2024-03-01,north,1,too,many\n"


def _resources(store: ObjectStore, database_url: str) -> dict[str, object]:
    if isinstance(store, S3Store):
        object_store = ObjectStoreResource(
            storage_url=f"s3://{store.bucket}/{store.prefix}",
            s3_endpoint_url=store.endpoint_url,
            s3_access_key_id="testing",
            s3_secret_access_key="testing",
        )
    else:
        assert isinstance(store, LocalFolderStore)
        object_store = ObjectStoreResource(storage_url=f"file://{store.root}")
    return {"warehouse": WarehouseResource(database_url=database_url), "object_store": object_store}


def test_materialise_by_hand_loads_everything_pending(
    store: ObjectStore, warehouse: Warehouse, database_url: str
) -> None:
    source = make_source()
    store.write(key_of(source, "1.csv"), GOOD)
    store.write(key_of(source, "2.csv"), BAD)
    asset = build_raw_asset(source)

    result = dg.materialize(
        [asset], resources=_resources(store, database_url), raise_on_error=False
    )

    # The good file is committed and materialised; the bad one fails the check, visibly.
    assert result.success
    [materialization] = result.asset_materializations_for_node(raw_op_name(source.name))
    metadata: dict[str, Any] = {k: v.value for k, v in materialization.metadata.items()}
    assert (metadata["files_loaded"], metadata["files_failed"], metadata["rows_loaded"]) == (
        1,
        1,
        2,
    )
    assert metadata["extra_columns"] == ["coupon"]
    assert "| order_id |" in metadata["preview"] and "XMAS" in metadata["preview"]
    assert "2.csv" in metadata["failures"] and "line 2: more fields" in metadata["failures"]
    [check] = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed, check.severity) == (
        FILES_READABLE,
        False,
        dg.AssetCheckSeverity.ERROR,
    )
    assert "2.csv" in str(check.metadata["failed_files"].value)
    assert values(raw_rows(warehouse, source), "order_id", "coupon") == [("A", "XMAS"), ("B", None)]

    # Materialising again with nothing new is a clean no-op.
    again = dg.materialize([asset], resources=_resources(store, database_url))
    [materialization] = again.asset_materializations_for_node(raw_op_name(source.name))
    assert materialization.metadata["files_loaded"].value == 0
    assert [c.passed for c in again.get_asset_check_evaluations()] == [True]
    assert len(ledger_rows(warehouse, source)) == 2


def test_sensor_style_run_loads_only_the_requested_keys(
    store: ObjectStore, warehouse: Warehouse, database_url: str
) -> None:
    source = make_source()
    store.write(key_of(source, "1.csv"), GOOD)
    store.write(key_of(source, "2.csv"), GOOD.replace(b"A,", b"Z,"))
    op = raw_op_name(source.name)

    result = dg.materialize(
        [build_raw_asset(source)],
        resources=_resources(store, database_url),
        run_config={"ops": {op: {"config": {"keys": [key_of(source, "2.csv")]}}}},
    )

    assert result.success
    assert [e["object_key"] for e in ledger_rows(warehouse, source)] == [key_of(source, "2.csv")]


def test_ingest_job_carries_raw_and_its_direct_downstream(database_url: str) -> None:
    source = make_source()
    resources = {
        "warehouse": WarehouseResource(database_url=database_url),
        "object_store": ObjectStoreResource(storage_url="file:///tmp"),
    }
    raw = build_raw_asset(source)
    job = build_ingest_job(source)
    sensor = build_landing_sensor(source)

    # Before clean/<source> exists, the job is raw alone.
    alone = dg.Definitions(assets=[raw], jobs=[job], sensors=[sensor], resources=resources)
    assert _materialised_by_a_run(alone, f"ingest_{source.name}") == {raw_asset_key(source.name)}

    @dg.asset(key=["clean", source.name], deps=[raw_asset_key(source.name)])
    def clean() -> None:
        return None

    @dg.asset(key=["kpi", f"{source.name}_total"], deps=[clean.key])
    def kpi() -> None:
        return None

    full = dg.Definitions(
        assets=[raw, clean, kpi], jobs=[job], sensors=[sensor], resources=resources
    )
    assert _materialised_by_a_run(full, f"ingest_{source.name}") == {
        raw_asset_key(source.name),
        clean.key,
    }


def _materialised_by_a_run(defs: dg.Definitions, job_name: str) -> set[dg.AssetKey]:
    """The assets one run of the job materialises (nothing is pending: it loads no file)."""
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    return {event.asset_key for event in result.get_asset_materialization_events()}


def test_code_location_has_one_raw_asset_job_and_sensor_per_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from analytics_pipelines.lib.catalog import load_catalog
    from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR

    monkeypatch.setenv("STORAGE_URL", "file:///tmp")
    from analytics_pipelines.definitions import defs

    repository = defs().get_repository_def()
    for name, source in load_catalog(DEMO_CATALOG_DIR).sources.items():
        assert repository.has_job(f"ingest_{name}")
        assert repository.has_sensor_def(f"landing_{name}")
        spec = repository.assets_defs_by_key[raw_asset_key(name)].specs_by_key[raw_asset_key(name)]
        assert spec.group_name == source.value_chain
        assert set(spec.kinds) == {"postgres", "s3"}


def test_row_count_is_the_tables_total_and_this_runs_rows_stand_beside_it(
    store: ObjectStore, warehouse: Warehouse, database_url: str
) -> None:
    source = make_source()
    asset = build_raw_asset(source)
    second = b"order_id,ordered_at,region,amount\n" + b"".join(
        f"N{i},2024-03-03,north,{i}\n".encode() for i in range(5)
    )
    delivered = 0
    reported = []
    for name, content in (("1.csv", GOOD), ("2.csv", second), ("3.csv", BAD)):
        store.write(key_of(source, name), content)
        readable = content is not BAD
        this_file = content.count(b"\n") - 1 if readable else 0  # data lines, header aside
        delivered += this_file
        result = dg.materialize([asset], resources=_resources(store, database_url))
        [materialization] = result.asset_materializations_for_node(raw_op_name(source.name))
        metadata = materialization.metadata
        reported.append(
            (metadata["dagster/row_count"].value, metadata["rows_this_run"].value, delivered)
        )
        assert metadata["rows_this_run"].value == this_file

    # The table's rows after each run (2, 2 + 5, unchanged by the unreadable file), not the run's.
    assert reported == [(2, 2, 2), (7, 5, 7), (7, 0, 7)]
    assert len(raw_rows(warehouse, source)) == delivered
