"""Is the deployment usable? Bounded checks of the database, the object store, every landing
prefix and every source's latest delivery."""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import psycopg2

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest.file_status import FileVersion, latest_failed_deliveries
from analytics_pipelines.lib.pg import WarehouseError, describe_db_error, read_only
from analytics_pipelines.lib.settings import Settings
from analytics_pipelines.lib.storage import LocalFolderStore, ObjectStore, StorageError, open_store

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


NOT_CHECKED_DB = "not checked: the database is unavailable"
NOT_CHECKED_STORAGE = "not checked: the object store is unavailable"


def _os_reason(error: OSError) -> str:
    where = f" ({error.filename})" if error.filename else ""
    return f"{(error.strerror or type(error).__name__).lower()}{where}"


def _landing_problem(store: ObjectStore, prefix: str) -> str | None:
    try:
        store.list(prefix, limit=1)
    except StorageError as error:
        return f"cannot list {prefix}: {error}"
    except OSError as error:
        return f"cannot list {prefix}: {_os_reason(error)}"
    if isinstance(store, LocalFolderStore):
        # A listing may pass over a folder it cannot enter; say so instead of reporting "empty".
        folder = store.root / prefix
        if os.path.lexists(folder):
            if not folder.is_dir():
                return f"cannot read {prefix}: {folder} is not a folder"
            if not os.access(folder, os.R_OK | os.X_OK):
                return f"cannot read {prefix}: permission denied ({folder})"
    return None


def landing_problems(store: ObjectStore, sources: Iterable[SourceSpec]) -> dict[str, str]:
    """Per source whose landing prefix cannot be listed or read, the reason."""
    problems = {s.name: _landing_problem(store, s.landing_prefix) for s in sources}
    return {name: reason for name, reason in sorted(problems.items()) if reason is not None}


def _delivery_problem(version: FileVersion) -> str:
    return (
        f"latest delivery failed: {version.key} ({version.version}): {version.reason}"
        f" (`analytics-pipelines files {version.source} --status failed`)"
    )


def _db_and_deliveries(database_url: str, sources: list[SourceSpec]) -> dict[str, Any]:
    try:
        with read_only(database_url, connect_timeout=3, application_name="health") as conn:
            if not sources:
                return {"db": "ok", "deliveries": "ok"}
            try:
                failed = latest_failed_deliveries(conn, [s.name for s in sources])
            except psycopg2.Error as error:
                return {
                    "db": "ok",
                    "deliveries": f"cannot read the file ledger: {describe_db_error(error)}",
                }
    except WarehouseError as error:
        return {"db": str(error), "deliveries": NOT_CHECKED_DB}
    return {"db": "ok", "deliveries": {v.source: _delivery_problem(v) for v in failed} or "ok"}


def _storage_and_landing(store: ObjectStore, sources: list[SourceSpec]) -> dict[str, Any]:
    try:
        store.check()
    except StorageError as error:
        return {"storage": str(error), "landing": NOT_CHECKED_STORAGE}
    return {"storage": "ok", "landing": landing_problems(store, sources) or "ok"}


PARTS = {"db": "database", "deliveries": "database", "storage": "storage", "landing": "storage"}


def check_health(
    database_url: str,
    store: ObjectStore,
    sources: Iterable[SourceSpec] = (),
    timeout: float = CHECK_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """Each part "ok" or why not, within `timeout`; `status` is "ok" only when every part is.

    Parts: `db`, `storage` (the store's root), `landing` (per source whose landing prefix cannot
    be listed or read) and `deliveries` (per source whose newest file version failed).
    """
    sources = list(sources)
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {
        "database": pool.submit(_db_and_deliveries, database_url, sources),
        "storage": pool.submit(_storage_and_landing, store, sources),
    }
    results: dict[str, dict[str, Any]] = {}
    for side, future in futures.items():
        try:
            results[side] = future.result(timeout=timeout)
        except FutureTimeout:
            results[side] = {}
    # A hung check must not hold the caller: its thread is abandoned, not joined.
    pool.shutdown(wait=False, cancel_futures=True)
    report = {
        part: results[side].get(part, f"no answer within {timeout:.0f} s")
        for part, side in PARTS.items()
    }
    status = "ok" if all(value == "ok" for value in report.values()) else "degraded"
    return {
        "status": status,
        **{part: report[part] for part in ("db", "storage", "landing", "deliveries")},
    }


def describe_problems(report: dict[str, Any]) -> str:
    """`part=reason; ...` for every part that is not ok (a dict part lists its sources)."""
    problems = []
    for part, value in report.items():
        if part == "status" or value == "ok":
            continue
        if isinstance(value, dict):
            value = "; ".join(f"{name}: {reason}" for name, reason in value.items())
        problems.append(f"{part}={value}")
    return "; ".join(problems)
