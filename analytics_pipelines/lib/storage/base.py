"""The object-store interface ingestion needs, independent of where the bytes live."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import IO


class StorageError(Exception):
    """The store is unreachable or refused an operation; the message is for people."""


class ObjectNotFound(StorageError):
    """No object at that key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    modified: datetime


class ObjectStore(abc.ABC):
    """Keys are `/`-separated relative paths; listings are in lexicographic key order."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the store points, without secrets (for logs and health output)."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise StorageError with a readable reason unless the store can be used."""

    @abc.abstractmethod
    def list(
        self, prefix: str = "", *, start_after: str | None = None, limit: int = 1000
    ) -> list[ObjectInfo]:
        """At most `limit` objects under `prefix` whose key sorts after `start_after`."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Metadata of one object; ObjectNotFound if absent."""

    @abc.abstractmethod
    def open(self, key: str) -> AbstractContextManager[IO[bytes]]:
        """A streaming binary reader of the object's content."""

    @abc.abstractmethod
    def write(self, key: str, data: bytes | IO[bytes]) -> ObjectInfo:
        """Create or replace the object at `key`."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object if present."""

    def iter_all(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[ObjectInfo]:
        """Every object under `prefix`, one bounded page at a time."""
        after: str | None = None
        while True:
            page = self.list(prefix, start_after=after, limit=page_size)
            yield from page
            if len(page) < page_size:
                return
            after = page[-1].key
