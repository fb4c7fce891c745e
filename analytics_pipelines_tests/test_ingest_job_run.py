"""A run of the whole ingestion job cleans while loading; a run of raw alone does not."""

from __future__ import annotations

import dagster as dg

from analytics_pipelines.defs.clean.assets import build_clean_asset
from analytics_pipelines.defs.ingest.assets import build_raw_asset
from analytics_pipelines.defs.ingest.sensors import build_ingest_job, ingest_job_name, raw_asset_key
from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.storage import LocalFolderStore
from analytics_pipelines.resources import ObjectStoreResource, WarehouseResource
from analytics_pipelines_tests.test_ingest_helpers import key_of, make_source

HEADER = b"order_id,ordered_at,region,amount\n"


def _job(
    local_store: LocalFolderStore, database_url: str, files: int
) -> tuple[SourceSpec, dg.JobDefinition]:
    source = make_source()
    for n in range(files):
        local_store.write(
            key_of(source, f"{n}.csv"), HEADER + f"O{n},2024-03-0{n + 1},north,{n}\n".encode()
        )
    defs = dg.Definitions(
        assets=[build_raw_asset(source), build_clean_asset(source)],
        jobs=[build_ingest_job(source)],
        resources={
            "warehouse": WarehouseResource(database_url=database_url),
            "object_store": ObjectStoreResource(storage_url=f"file://{local_store.root}"),
        },
    )
    return source, defs.resolve_job_def(ingest_job_name(source.name))


def _clean_metadata(result: dg.ExecuteInProcessResult, source_name: str) -> dict[str, object]:
    node = dg.AssetKey(["clean", source_name]).to_python_identifier()
    [materialization] = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


def test_whole_job_run_cleans_while_loading(
    local_store: LocalFolderStore, database_url: str
) -> None:
    source, job = _job(local_store, database_url, 2)

    result = job.execute_in_process()

    assert result.success
    assert _clean_metadata(result, source.name)["files_cleaned_while_loading"] == 2


def test_raw_alone_is_loaded_without_the_fast_clean_path(
    local_store: LocalFolderStore, database_url: str
) -> None:
    source, job = _job(local_store, database_url, 1)

    raw_only = job.execute_in_process(asset_selection=[raw_asset_key(source.name)])
    assert raw_only.success
    # The later clean run then does the cleaning itself: nothing was cleaned while loading.
    result = job.execute_in_process(asset_selection=[dg.AssetKey(["clean", source.name])])
    assert result.success
    metadata = _clean_metadata(result, source.name)
    assert metadata["files_cleaned_while_loading"] == 0
    assert metadata["files"] == 1
