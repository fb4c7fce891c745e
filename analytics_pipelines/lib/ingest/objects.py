"""Which objects one load looks at, and which errors concern one object rather than the run.

Per-object isolation: a load goes through its objects one by one, and whatever stops one of
them from loading ends as that version's `failed` ledger row with the reason, while the
others load:
* FileRejected from our readers (format, encoding, shape, the column budget);
* ObjectUnreadable from the store, ObjectNotFound included: permissions, special files,
  links out of the storage folder, broken or looping links, archived S3 objects, a file that
  vanished between listing and reading (the store turns the OS and S3 errors of one object
  into these); unreadable entries a listing reported (`ObjectInfo.problem`) are recorded
  without being opened;
* PostgreSQL errors caused by the file's content: data exceptions (SQLSTATE class 22) and
  program limits (class 54, e.g. a row too wide).
Everything else propagates and fails the run with the file still pending, to be tried again:
the database unreachable or erroring, the store or bucket unreachable or denied as a whole
(StorageError), a folder that cannot be listed, local disk full while spooling, and bugs.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import psycopg2

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest.errors import FileRejected, KeysRefused
from analytics_pipelines.lib.ingest.translate import describe_copy_error
from analytics_pipelines.lib.storage import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectUnreadable,
)

VANISHED = "the file vanished between listing and reading"
# The etag of a version whose object was gone when the run looked: the same (key, "vanished")
# is recorded once, and the object's reappearance is a new delivery.
VANISHED_ETAG = "vanished"
UNREADABLE_ETAG = "unreadable"
# SQLSTATE classes of errors caused by a file's content: data exception, program limit exceeded.
_FILE_SQLSTATE_CLASSES = ("22", "54")


def is_candidate(key: str) -> bool:
    """Hidden files (`.DS_Store`, editor swap files) and folder markers are not deliveries."""
    return not posixpath.basename(key).startswith(".") and not key.endswith("/")


def refuse_foreign_keys(source: SourceSpec, keys: Sequence[str]) -> None:
    """KeysRefused unless every key is a plain key under the source's landing prefix."""
    foreign = [
        k
        for k in keys
        if not k.startswith(source.landing_prefix) or k.startswith("/") or ".." in k.split("/")
    ]
    if foreign:
        shown = ", ".join(repr(k) for k in foreign[:5]) + (" …" if len(foreign) > 5 else "")
        raise KeysRefused(
            f"{len(foreign)} key(s) are not under the landing prefix {source.landing_prefix!r} "
            f"of source {source.name}: {shown}; nothing was loaded"
        )


def candidates(
    source: SourceSpec, store: ObjectStore, keys: Sequence[str] | None
) -> Iterator[ObjectInfo]:
    """The objects to consider: the landing prefix's listing, or the given keys as they are now."""
    if keys is None:
        yield from (i for i in store.iter_all(source.landing_prefix) if is_candidate(i.key))
        return
    for key in keys:
        if key.endswith("/"):
            continue
        try:
            yield store.head(key)
        except ObjectNotFound:
            yield ObjectInfo(key, 0, VANISHED_ETAG, datetime.now(UTC), problem=VANISHED)
        except ObjectUnreadable as unreadable:
            yield ObjectInfo(key, 0, UNREADABLE_ETAG, datetime.now(UTC), problem=str(unreadable))


def pages(items: Iterator[ObjectInfo], size: int) -> Iterator[list[ObjectInfo]]:
    page: list[ObjectInfo] = []
    for item in items:
        page.append(item)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def file_error(error: BaseException) -> psycopg2.Error | None:
    """The driver error behind a PostgreSQL error the file caused, else None."""
    original = getattr(error, "orig", error)
    if isinstance(original, psycopg2.Error) and (original.pgcode or "")[:2] in (
        _FILE_SQLSTATE_CLASSES
    ):
        return original
    return None


def failure_reason(error: BaseException, source: SourceSpec) -> str | None:
    """The reason to record when `error` concerns the object being loaded; None: propagate."""
    if isinstance(error, ObjectNotFound):
        return VANISHED
    if isinstance(error, FileRejected | ObjectUnreadable):
        return str(error)
    database = file_error(error)
    if database is not None:
        return describe_copy_error(database, source, 1, 0)
    return None
