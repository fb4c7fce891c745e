"""Object store on a local folder: the laptop stand-in for MinIO."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from analytics_pipelines.lib.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
)

_PARTIAL_SUFFIX = ".partial"
# Listings report each file's MD5. Stores are re-created per run and per sensor tick, so the
# hashes are cached per process, keyed by (path, size, mtime): a tick re-reads only changed files.
_ETAG_CACHE_SIZE = 200_000
_ETAGS: dict[tuple[str, int, int], str] = {}


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class LocalFolderStore(ObjectStore):
    """Keys map to files below `root`; the etag is the content's MD5, as S3 gives for simple uploads."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return f"file://{self.root}"

    def check(self) -> None:
        if not self.root.is_dir():
            raise StorageError(f"storage folder {self.root} does not exist")
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise StorageError(f"storage folder {self.root} is not readable and writable")

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StorageError(f"key {key!r} points outside the storage folder")
        return path

    def _info(self, key: str, path: Path) -> ObjectInfo:
        stat = path.stat()
        cache_key = (str(path), stat.st_size, stat.st_mtime_ns)
        etag = _ETAGS.get(cache_key)
        if etag is None:
            if len(_ETAGS) >= _ETAG_CACHE_SIZE:
                _ETAGS.clear()
            etag = _md5_of(path)
            _ETAGS[cache_key] = etag
        return ObjectInfo(key, stat.st_size, etag, datetime.fromtimestamp(stat.st_mtime, UTC))

    def _keys_after(
        self, directory: Path, rel: str, prefix: str, start_after: str | None
    ) -> Iterator[str]:
        """Keys below `directory` in lexicographic order, skipping subtrees that cannot match."""
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        # Order by the key each entry yields: a directory "a" sorts as "a/", as in S3.
        children = sorted(
            (f"{rel}{entry.name}/" if entry.is_dir() else f"{rel}{entry.name}", entry)
            for entry in entries
        )
        for key, entry in children:
            if entry.is_dir():
                if not (key.startswith(prefix) or prefix.startswith(key)):
                    continue
                if (
                    start_after is not None
                    and not start_after.startswith(key)
                    and key < start_after
                ):
                    continue
                yield from self._keys_after(Path(entry.path), key, prefix, start_after)
            else:
                if entry.name.endswith(_PARTIAL_SUFFIX) or not key.startswith(prefix):
                    continue
                if start_after is not None and key <= start_after:
                    continue
                yield key

    def list(
        self, prefix: str = "", *, start_after: str | None = None, limit: int = 1000
    ) -> list[ObjectInfo]:
        self.check()
        # The walk yields keys in order, so stopping after `limit` bounds the work per call.
        keys = list(itertools.islice(self._keys_after(self.root, "", prefix, start_after), limit))
        return [self._info(key, self.root / key) for key in keys]

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"no object {key!r} in {self.describe()}")
        return self._info(key, path)

    def open(self, key: str) -> AbstractContextManager[IO[bytes]]:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"no object {key!r} in {self.describe()}")
        return path.open("rb")

    def write(self, key: str, data: bytes | IO[bytes]) -> ObjectInfo:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename, so a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_PARTIAL_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                if isinstance(data, bytes | bytearray):
                    handle.write(data)
                else:
                    shutil.copyfileobj(data, handle, 1 << 20)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._info(key, path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
