"""Is the deployment usable? One bounded check of the database and of the object store."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from analytics_pipelines.lib.settings import Settings
from analytics_pipelines.lib.storage import ObjectStore, StorageError, open_store
from analytics_pipelines.lib.warehouse import Warehouse, WarehouseError

CHECK_TIMEOUT_SECONDS = 8.0


def store_from_settings(settings: Settings) -> ObjectStore:
    return open_store(
        settings.storage_url,
        endpoint_url=settings.s3_endpoint_url,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key.get_secret_value()
        if settings.s3_secret_access_key
        else None,
        region=settings.s3_region,
    )


def _db(warehouse: Warehouse) -> str:
    try:
        warehouse.ping()
    except WarehouseError as error:
        return str(error)
    return "ok"


def _storage(store: ObjectStore) -> str:
    try:
        store.check()
    except StorageError as error:
        return str(error)
    return "ok"


def check_health(
    warehouse: Warehouse, store: ObjectStore, timeout: float = CHECK_TIMEOUT_SECONDS
) -> dict[str, Any]:
    """`{"status": "ok"|"degraded", "db": "ok"|reason, "storage": "ok"|reason}`, within `timeout`."""
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {"db": pool.submit(_db, warehouse), "storage": pool.submit(_storage, store)}
    report: dict[str, Any] = {}
    for part, future in futures.items():
        try:
            report[part] = future.result(timeout=timeout)
        except FutureTimeout:
            report[part] = f"no answer within {timeout:.0f} s"
    # A hung check must not hold the caller: its thread is abandoned, not joined.
    pool.shutdown(wait=False, cancel_futures=True)
    status = "ok" if all(value == "ok" for value in report.values()) else "degraded"
    return {"status": status, **report}
