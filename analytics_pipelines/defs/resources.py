"""The resources every asset, sensor and check is given, configured from the environment."""

import os

import dagster as dg

from analytics_pipelines.resources import ObjectStoreResource, WarehouseResource


def _optional(name: str) -> dg.EnvVar | None:
    # EnvVar keeps the value out of the UI; an unset optional variable simply stays unset.
    return dg.EnvVar(name) if os.environ.get(name) else None


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "warehouse": WarehouseResource(database_url=dg.EnvVar("DATABASE_URL")),
            "object_store": ObjectStoreResource(
                storage_url=dg.EnvVar("STORAGE_URL"),
                s3_endpoint_url=_optional("S3_ENDPOINT_URL"),
                s3_access_key_id=_optional("S3_ACCESS_KEY_ID"),
                s3_secret_access_key=_optional("S3_SECRET_ACCESS_KEY"),
                s3_region=os.environ.get("S3_REGION", "us-east-1"),
            ),
        }
    )
