"""Platform health in the UI: a scheduled job that checks the database and the object store."""

import dagster as dg

from analytics_pipelines.lib.health import check_health
from analytics_pipelines.resources import ObjectStoreResource, WarehouseResource


@dg.op(description="Checks that the warehouse answers and the object store is reachable.")
def check_platform_health(
    context: dg.OpExecutionContext, warehouse: WarehouseResource, object_store: ObjectStoreResource
) -> None:
    report = check_health(warehouse.get_warehouse(), object_store.get_store())
    context.log.info(f"health: {report}")
    if report["status"] != "ok":
        raise dg.Failure(
            description=f"platform degraded: db={report['db']}; storage={report['storage']}",
            metadata={key: dg.MetadataValue.text(str(value)) for key, value in report.items()},
        )


@dg.job(
    description="Checks the warehouse and the object store; fails with the reason when one is down."
)
def platform_health_job() -> None:
    check_platform_health()


platform_health_schedule = dg.ScheduleDefinition(
    job=platform_health_job,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
