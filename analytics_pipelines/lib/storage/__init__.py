"""Object storage: one interface, an S3/MinIO and a local-folder implementation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from analytics_pipelines.lib.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectUnreadable,
    StorageError,
)
from analytics_pipelines.lib.storage.local import LocalFolderStore

if TYPE_CHECKING:
    from analytics_pipelines.lib.storage.s3 import S3Store

# Where the archive (lib/archive.py) writes cleaned rows as Parquet, beside the landing prefixes.
LAKE_PREFIX = "lake"


def __getattr__(name: str) -> Any:
    # boto3 costs most of a second to import: only S3 users pay for it.
    if name == "S3Store":
        from analytics_pipelines.lib.storage.s3 import S3Store

        return S3Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LAKE_PREFIX",
    "LocalFolderStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectUnreadable",
    "S3Store",
    "StorageError",
    "open_store",
]


def open_store(
    storage_url: str,
    *,
    endpoint_url: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    region: str = "us-east-1",
) -> ObjectStore:
    """The store a `STORAGE_URL` names: `s3://bucket[/prefix]` or `file:///path`."""
    parts = urlsplit(storage_url)
    if parts.scheme == "file":
        return LocalFolderStore(unquote(parts.path))
    if parts.scheme == "s3" and parts.netloc:
        from analytics_pipelines.lib.storage.s3 import S3Store

        return S3Store(
            parts.netloc,
            parts.path,
            endpoint_url=endpoint_url,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            region=region,
        )
    raise StorageError(
        f"STORAGE_URL {storage_url!r}: expected s3://bucket[/prefix] or file:///path"
    )
