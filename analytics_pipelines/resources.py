"""Dagster resources wrapping the warehouse and the object store (configured with dg.EnvVar)."""

from __future__ import annotations

import threading
from typing import ClassVar

import dagster as dg
from pydantic import Field, PrivateAttr

from analytics_pipelines.lib.storage import ObjectStore, open_store
from analytics_pipelines.lib.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """PostgreSQL warehouse: a pooled SQLAlchemy engine on psycopg2, shared per process."""

    database_url: str = Field(description="PostgreSQL URL (DATABASE_URL)")
    pool_size: int = Field(default=5, description="connections kept open per process")

    _engines: ClassVar[dict[str, Warehouse]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def get_warehouse(self) -> Warehouse:
        # Resources are re-created per run and per sensor tick; the engine and its pool are not.
        with self._lock:
            warehouse = self._engines.get(self.database_url)
            if warehouse is None:
                warehouse = Warehouse(self.database_url, pool_size=self.pool_size)
                self._engines[self.database_url] = warehouse
            return warehouse


class ObjectStoreResource(dg.ConfigurableResource):
    """Object storage: S3/MinIO (`s3://bucket/prefix`) or a local folder (`file:///path`)."""

    storage_url: str = Field(description="STORAGE_URL")
    s3_endpoint_url: str | None = Field(default=None, description="S3_ENDPOINT_URL, e.g. MinIO")
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_region: str = "us-east-1"

    _store: ObjectStore | None = PrivateAttr(default=None)

    def get_store(self) -> ObjectStore:
        if self._store is None:
            self._store = open_store(
                self.storage_url,
                endpoint_url=self.s3_endpoint_url or None,
                access_key_id=self.s3_access_key_id or None,
                secret_access_key=self.s3_secret_access_key or None,
                region=self.s3_region,
            )
        return self._store
