"""`archive/archive_<source>` assets: cleaned rows as a date-partitioned Parquet lake, then raw retention."""

from collections.abc import Sequence

import dagster as dg

from analytics_pipelines.lib.catalog import SourceSpec, load_catalog_cached
from analytics_pipelines.lib.logging import bound_context, run_context_fields
from analytics_pipelines.lib.settings import get_settings
from analytics_pipelines.lib.storage import LAKE_PREFIX
from analytics_pipelines.resources import ObjectStoreResource, WarehouseResource

ARCHIVE_JOB = "archive_job"


def archive_asset_key(source: str) -> dg.AssetKey:
    """`archive/archive_<source>`: its own label in the lineage graph, which shows only the last
    part of a key (see `raw_asset_key`)."""
    return dg.AssetKey(["archive", f"archive_{source}"])


def build_archive_asset(source: SourceSpec) -> dg.AssetsDefinition:
    retention = (
        f"; raw rows older than {source.raw_retention_days} days are deleted once archived"
        if source.raw_retention_days
        else ""
    )

    @dg.asset(
        key=archive_asset_key(source.name),
        deps=[dg.AssetKey(["clean", source.name])],
        group_name=source.value_chain,
        kinds={"parquet", "s3"},
        description=(
            f"Cleaned {source.name} rows as Parquet in {LAKE_PREFIX}/{source.name}/date=YYYY-MM-DD/"
            f"{retention}."
        ),
    )
    def archive(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        object_store: ObjectStoreResource,
    ) -> dg.MaterializeResult:
        # Imported here: the archive writes Parquet with pyarrow, which loading the definitions
        # does not need.
        from analytics_pipelines.lib.archive import archive_source, purge_raw

        with bound_context(**run_context_fields(context)):
            result = archive_source(
                warehouse.get_warehouse(),
                object_store.get_store(),
                source,
                run_id=context.run.run_id,
            )
            result.raw_rows_deleted = purge_raw(warehouse.get_warehouse(), source)
        days = [day.isoformat() for day in result.dates_archived]
        context.log.info(
            f"archived {result.rows} rows of {source.name} on {len(days)} dates; "
            f"{result.raw_rows_deleted} raw rows past retention deleted"
        )
        return dg.MaterializeResult(
            metadata={
                "dates_archived": dg.MetadataValue.json(days),
                "dates_emptied": dg.MetadataValue.json(
                    [day.isoformat() for day in result.dates_emptied]
                ),
                "rows": dg.MetadataValue.int(result.rows),
                "files": dg.MetadataValue.int(result.files),
                "raw_rows_deleted": dg.MetadataValue.int(result.raw_rows_deleted),
                "watermark": dg.MetadataValue.text(
                    result.watermark.isoformat() if result.watermark else ""
                ),
                "lake_prefix": dg.MetadataValue.text(f"{LAKE_PREFIX}/{source.name}/"),
            }
        )

    return archive


def build_archive_definitions(sources: Sequence[SourceSpec]) -> dg.Definitions:
    # A reference source has no business dates to partition the lake by: its raw rows are kept.
    assets = [build_archive_asset(source) for source in sources if source.kind == "events"]
    if not assets:
        return dg.Definitions()
    job = dg.define_asset_job(
        ARCHIVE_JOB,
        selection=dg.AssetSelection.assets(*assets),
        description="Archives cleaned rows touched since the last archive and applies raw retention.",
    )
    # Incremental: a tick with nothing new only reads the watermark and writes nothing.
    schedule = dg.ScheduleDefinition(
        name="archive_schedule",
        job=job,
        cron_schedule="40 * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return dg.Definitions(assets=assets, jobs=[job], schedules=[schedule])


@dg.definitions
def archive_definitions() -> dg.Definitions:
    catalog = load_catalog_cached(str(get_settings().catalog_dir))
    return build_archive_definitions(list(catalog.sources.values()))
