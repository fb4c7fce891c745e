"""Object store on S3 or MinIO, spoken to over HTTP with boto3 (path-style, custom endpoint).

Keys ending in `/` are folder markers (zero-byte objects S3 and MinIO consoles create), not
deliveries: listings leave them out. Errors of one object (missing, access denied to that
object while the bucket is readable, archived in a cold storage class) are ObjectUnreadable;
anything else (endpoint down, bucket missing or denied) is a StorageError about the store.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, closing
from typing import IO, Any, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from analytics_pipelines.lib.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectUnreadable,
    StorageError,
)

_DENIED = ("403", "AccessDenied")


def _reason(error: Exception, bucket: str) -> str:
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket", "404"):
            return f"bucket {bucket!r} does not exist"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "AccessDenied"):
            return f"access to bucket {bucket!r} denied (check S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY)"
        return f"S3 error {code}: {error.response.get('Error', {}).get('Message', '')}".strip()
    if isinstance(error, EndpointConnectionError):
        return f"S3 endpoint unreachable ({error.kwargs.get('endpoint_url', '')})"
    return f"S3 error: {error}"


class S3Store(ObjectStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str = "us-east-1",
        client: Any | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=3,
                read_timeout=30,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _full(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def _relative(self, key: str) -> str:
        return key[len(self.prefix) :]

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as error:
            raise StorageError(_reason(error, self.bucket)) from error

    def list(
        self, prefix: str = "", *, start_after: str | None = None, limit: int = 1000
    ) -> list[ObjectInfo]:
        listed: list[ObjectInfo] = []
        after = self._full(start_after) if start_after else None
        # Markers are left out, so a page may need a further request to hold `limit` objects
        # (a short page means "no more" to the callers).
        while len(listed) < limit:
            request: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": self._full(prefix),
                "MaxKeys": limit - len(listed),
            }
            if after:
                request["StartAfter"] = after
            try:
                response = self.client.list_objects_v2(**request)
            except (ClientError, BotoCoreError) as error:
                raise StorageError(_reason(error, self.bucket)) from error
            contents = response.get("Contents", [])
            listed += [
                ObjectInfo(
                    key=self._relative(item["Key"]),
                    size=int(item["Size"]),
                    etag=str(item["ETag"]).strip('"'),
                    modified=item["LastModified"],
                )
                for item in contents
                if not str(item["Key"]).endswith("/")
            ]
            if not contents or not response.get("IsTruncated"):
                break
            after = str(contents[-1]["Key"])
        return listed

    def _fetch(self, operation: str, key: str) -> dict[str, Any]:
        """Call a per-object operation, naming a missing object apart from other failures."""
        try:
            response: dict[str, Any] = getattr(self.client, operation)(
                Bucket=self.bucket, Key=self._full(key)
            )
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code"))
            if code in ("404", "NoSuchKey"):
                raise ObjectNotFound(f"no object {key!r} in {self.describe()}") from error
            if code == "InvalidObjectState":
                raise ObjectUnreadable(
                    f"{key} is archived in a cold storage class (e.g. GLACIER): restore it "
                    "to load it"
                ) from error
            if code in _DENIED:
                # Denied for the whole bucket (credentials, policy) is the store's problem.
                self.check()
                raise ObjectUnreadable(f"permission denied reading {key}") from error
            raise StorageError(_reason(error, self.bucket)) from error
        except BotoCoreError as error:
            raise StorageError(_reason(error, self.bucket)) from error
        return response

    def head(self, key: str) -> ObjectInfo:
        response = self._fetch("head_object", key)
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=str(response["ETag"]).strip('"'),
            modified=response["LastModified"],
        )

    def open(self, key: str) -> AbstractContextManager[IO[bytes]]:
        body = cast(IO[bytes], self._fetch("get_object", key)["Body"])
        return closing(body)

    def write(self, key: str, data: bytes | IO[bytes]) -> ObjectInfo:
        try:
            if isinstance(data, bytes | bytearray):
                self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=bytes(data))
            else:
                self.client.upload_fileobj(data, self.bucket, self._full(key))
        except (ClientError, BotoCoreError) as error:
            raise StorageError(_reason(error, self.bucket)) from error
        return self.head(key)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except (ClientError, BotoCoreError) as error:
            raise StorageError(_reason(error, self.bucket)) from error
