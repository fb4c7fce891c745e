"""Platform health in the UI: a scheduled job that checks the database, the object store, the
landing prefixes and each source's latest delivery."""

import dagster as dg

from analytics_pipelines.lib.health import check_health, describe_problems
from analytics_pipelines.lib.ingest.config import definitions_catalog
from analytics_pipelines.resources import ObjectStoreResource, WarehouseResource


@dg.op(
    description=(
        "Checks that the warehouse answers, the object store and every landing prefix can be "
        "listed, and that no source's latest delivery failed."
    )
)
def check_platform_health(
    context: dg.OpExecutionContext, warehouse: WarehouseResource, object_store: ObjectStoreResource
) -> None:
    report = check_health(
        warehouse.database_url,
        object_store.get_store(),
        definitions_catalog().sources.values(),
    )
    context.log.info(f"health: {report}")
    if report["status"] != "ok":
        raise dg.Failure(
            description=f"platform degraded: {describe_problems(report)}",
            metadata={
                key: dg.MetadataValue.json(value)
                if isinstance(value, dict)
                else dg.MetadataValue.text(str(value))
                for key, value in report.items()
            },
        )


@dg.job(
    description=(
        "Checks the warehouse, the object store, the landing prefixes and the latest deliveries; "
        "fails with the reasons when one is not ok."
    )
)
def platform_health_job() -> None:
    check_platform_health()


platform_health_schedule = dg.ScheduleDefinition(
    job=platform_health_job,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
