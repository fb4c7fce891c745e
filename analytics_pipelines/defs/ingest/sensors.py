"""Landing sensors and ingestion jobs: a new or corrected file becomes a run through raw and clean."""

import dagster as dg

from analytics_pipelines.defs import run_priority
from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest.config import definitions_catalog, sensor_interval_seconds
from analytics_pipelines.lib.ingest.discovery import DEFAULT_PAGE_SIZE, LandingCursor, plan_tick
from analytics_pipelines.resources import ObjectStoreResource, WarehouseResource

_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def raw_asset_key(source: str) -> dg.AssetKey:
    """`raw/raw_<source>`, beside `clean/<source>`: Dagster's lineage graph labels a node with
    the last part of its key alone, so raw and clean need different last parts to be told apart
    (`raw/orders` and `clean/orders` were both drawn as "orders")."""
    return dg.AssetKey(["raw", f"raw_{source}"])


def raw_op_name(source: str) -> str:
    return raw_asset_key(source).to_python_identifier()


def ingest_job_name(source: str) -> str:
    return f"ingest_{source}"


def build_ingest_job(
    source: SourceSpec,
):  # returns dagster's non-public UnresolvedAssetJobDefinition
    """raw/raw_<source> and what directly depends on it (clean/<source>), in one run."""
    return dg.define_asset_job(
        ingest_job_name(source.name),
        selection=dg.AssetSelection.assets(raw_asset_key(source.name)).downstream(depth=1),
        description=f"Loads new {source.name} files into raw and carries them through clean.",
        tags={"ingest/source": source.name},
    )


def build_landing_sensor(
    source: SourceSpec,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"landing_{source.name}",
        job_name=ingest_job_name(source.name),
        minimum_interval_seconds=sensor_interval_seconds(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Watches {source.landing_prefix} (at most {page_size} keys per listing, two listings "
            "per tick) and starts an ingestion run for new or corrected files."
        ),
    )
    def landing(
        context: dg.SensorEvaluationContext,
        warehouse: WarehouseResource,
        object_store: ObjectStoreResource,
    ) -> dg.SensorResult:
        busy = context.instance.get_runs(
            filters=dg.RunsFilter(job_name=ingest_job_name(source.name), statuses=_IN_FLIGHT),
            limit=1,
        )
        if busy:
            # Keep the cursor: what that run is loading is compared with the ledger afterwards.
            return dg.SensorResult(
                skip_reason=f"waiting for ingestion run {busy[0].run_id} to finish",
                cursor=context.cursor,
            )
        plan = plan_tick(
            source,
            object_store.get_store(),
            warehouse.get_warehouse(),
            LandingCursor.parse(context.cursor),
            page_size,
        )
        if not plan.new:
            return dg.SensorResult(
                skip_reason=f"listed {plan.listed} object(s) under {source.landing_prefix}: nothing new",
                cursor=plan.cursor.dump(),
            )
        keys = [info.key for info in plan.new]
        context.log.info(f"{len(keys)} new or changed file(s) under {source.landing_prefix}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"{source.name}:{plan.run_key}",
                    run_config={"ops": {raw_op_name(source.name): {"config": {"keys": keys}}}},
                    tags={
                        "ingest/source": source.name,
                        "ingest/files": str(len(keys)),
                        **run_priority.INGEST,
                    },
                )
            ],
            cursor=plan.cursor.dump(),
        )

    return landing


@dg.definitions
def landing_sensors() -> dg.Definitions:
    catalog = definitions_catalog()
    jobs = {name: build_ingest_job(source) for name, source in catalog.sources.items()}
    return dg.Definitions(
        jobs=list(jobs.values()),
        sensors=[build_landing_sensor(source) for source in catalog.sources.values()],
    )
