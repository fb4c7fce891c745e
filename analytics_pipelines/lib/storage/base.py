"""The object-store interface ingestion needs, independent of where the bytes live."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import IO


class StorageError(Exception):
    """The store is unreachable or refused an operation; the message is for people.

    Raised as such, it concerns the whole store (or a whole folder of it): callers let it
    propagate. The subclasses below concern one object only.
    """


class ObjectUnreadable(StorageError):
    """This one object cannot be read (permissions, not a regular file, archived, ...); other
    objects may be fine. The message is the reason to record for it."""


class ObjectNotFound(ObjectUnreadable):
    """No object at that key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    modified: datetime
    # Set when the listing found something at this key that cannot be read as an object (a
    # FIFO, a link out of the storage folder, a file without read permission): the reason.
    # Such entries are listed, never opened, so the loader can record them as failed.
    # Their etag is derived from the entry's metadata: it changes when the entry is fixed.
    problem: str | None = None


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
        """At most `limit` objects under `prefix` whose key sorts after `start_after`.

        Folder markers (S3 keys ending in `/`) are not objects and are never listed.
        """

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Metadata of one object; ObjectNotFound if absent (an unreadable one: see `problem`)."""

    @abc.abstractmethod
    def open(self, key: str) -> AbstractContextManager[IO[bytes]]:
        """A streaming binary reader of the object's content.

        ObjectUnreadable (opening or while reading) when this object cannot be read.
        """

    def known_md5(self, reader: IO[bytes]) -> str | None:
        """The MD5 of the whole content of `reader` (from `open`), when the store knows it
        without the bytes being hashed again and can tell, at the moment it is asked, that the
        content has not changed since. None: whoever needs the hash computes it while reading.
        """
        return None

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
