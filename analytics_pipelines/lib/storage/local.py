"""Object store on a local folder: the laptop stand-in for MinIO.

What a listing sees below the storage folder:
* regular files are objects (etag: the content's MD5);
* a symbolic link is followed only when it ends at a regular file inside the storage folder
  (the object's content is the target's); a link out of the folder, a broken or looping link,
  and a link to a folder (never descended: no loops, no escapes through folders) are listed
  as unreadable entries with the reason, never opened;
* FIFOs, sockets and devices are listed as unreadable entries ("not a regular file (FIFO)")
  and never opened, so nothing can hang on them; files opened for reading are opened
  non-blocking and checked to be regular before a byte is read.
Unreadable entries (`ObjectInfo.problem`) let the loader record why a file was not loaded.
A sub-folder that cannot be listed fails the listing (StorageError): it is not one object.
"""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, cast

from analytics_pipelines.lib.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectUnreadable,
    StorageError,
)

_PARTIAL_SUFFIX = ".partial"
# Listings report each file's MD5. Stores are re-created per run and per sensor tick, so the
# hashes are cached per process, keyed by the file's identity: a tick re-reads only changed
# files. The identity holds the inode's change time, which every write, rename or restore of
# the file moves and no user can set back (unlike the modification time, which `cp -p`, `touch
# -d` and rsync do): same identity, same content. The loader uses the cached hash as the
# content hash of what it read when the identity is the same after the read (`known_md5`).
_ETAG_CACHE_SIZE = 200_000
_Identity = tuple[int, int, int, int, int]
_ETAGS: dict[_Identity, str] = {}
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_KINDS = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISDIR, "folder"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "special file")


def _os_reason(key: str, error: OSError) -> str:
    if isinstance(error, PermissionError):
        return f"permission denied reading {key}"
    if isinstance(error, FileNotFoundError):
        return f"the file vanished between listing and reading ({key})"
    if error.errno == errno.ELOOP:
        return f"{key} became a symbolic link while being read"
    return f"cannot read {key}: {error.strerror or error}"


def _open_regular(path: Path, key: str) -> IO[bytes]:
    """Open without following a final link and without blocking; only a regular file."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as error:
        raise ObjectUnreadable(_os_reason(key, error)) from error
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ObjectUnreadable(f"not a regular file ({_kind(mode)}): {key}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=0)


def _identity(status: os.stat_result) -> _Identity:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


class _ObjectReader(io.RawIOBase):
    """A file's bytes; an OS error while reading becomes ObjectUnreadable for this object."""

    def __init__(self, handle: IO[bytes], key: str) -> None:
        self._handle = handle
        self._key = key
        self.opened_as = self.identity()

    def identity(self) -> _Identity:
        return _identity(os.fstat(self._handle.fileno()))

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            return cast(int, self._handle.readinto(buffer))  # type: ignore[attr-defined]
        except OSError as error:
            raise ObjectUnreadable(_os_reason(self._key, error)) from error

    def close(self) -> None:
        self._handle.close()
        super().close()


def _md5_of(path: Path, key: str) -> tuple[str, _Identity | None]:
    """The file's MD5 and the identity it is the content of: the open file's, unchanged
    throughout the read. None for a file written while it was hashed: that hash is not kept."""
    digest = hashlib.md5(usedforsecurity=False)
    with _open_regular(path, key) as handle:
        before = _identity(os.fstat(handle.fileno()))
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
        steady = _identity(os.fstat(handle.fileno())) == before
    return digest.hexdigest(), before if steady else None


def _problem_etag(problem: str, status: os.stat_result, detail: str) -> str:
    """Stable while the entry stays as it is; changes when it is fixed (chmod, new target)."""
    text = (
        f"{problem}|{status.st_ino}|{status.st_mode}|{status.st_size}|{status.st_mtime_ns}|{detail}"
    )
    return "unreadable-" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:24]


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
        """Where `write` and `delete` act: inside the storage folder, links resolved."""
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StorageError(f"key {key!r} points outside the storage folder")
        return path

    def _read_path(self, key: str) -> Path:
        """The path a key names, without resolving links (they are judged by `_describe`)."""
        parts = [p for p in key.split("/") if p not in ("", ".")]
        if not parts or key.startswith("/") or ".." in parts:
            raise ObjectNotFound(f"no object {key!r} in {self.describe()}: not a plain key")
        return self.root.joinpath(*parts)

    def _inside(self, path: str) -> bool:
        root = os.path.realpath(self.root)
        return os.path.commonpath([root, path]) == root

    def _regular_info(self, key: str, path: Path, status: os.stat_result) -> ObjectInfo:
        modified = datetime.fromtimestamp(status.st_mtime, UTC)
        etag = _ETAGS.get(_identity(status))
        if etag is None:
            try:
                etag, hashed = _md5_of(path, key)
            except ObjectUnreadable as unreadable:
                return self._unreadable(key, status, str(unreadable))
            if len(_ETAGS) >= _ETAG_CACHE_SIZE:
                _ETAGS.clear()
            # Kept under the identity that was read, which a replacement since the stat changed.
            if hashed is not None:
                _ETAGS[hashed] = etag
        return ObjectInfo(key, status.st_size, etag, modified)

    @staticmethod
    def _unreadable(key: str, status: os.stat_result, problem: str, detail: str = "") -> ObjectInfo:
        return ObjectInfo(
            key,
            status.st_size,
            _problem_etag(problem, status, detail),
            datetime.fromtimestamp(status.st_mtime, UTC),
            problem=problem,
        )

    def _describe(self, key: str, path: Path) -> ObjectInfo:
        """What is at `path`: an object, or an unreadable entry with its reason (never opened)."""
        try:
            entry = os.lstat(path)
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r} in {self.describe()}") from None
        if stat.S_ISREG(entry.st_mode):
            return self._regular_info(key, path, entry)
        if not stat.S_ISLNK(entry.st_mode):
            if stat.S_ISDIR(entry.st_mode):
                raise ObjectNotFound(f"no object {key!r} in {self.describe()}: it is a folder")
            return self._unreadable(key, entry, f"not a regular file ({_kind(entry.st_mode)})")
        target = os.readlink(path)
        try:
            followed = os.stat(path)
        except FileNotFoundError:
            return self._unreadable(
                key, entry, f"broken symbolic link: its target {target} does not exist", target
            )
        except OSError as error:
            problem = (
                "symbolic links form a loop"
                if error.errno == errno.ELOOP
                else f"cannot follow the symbolic link to {target}: {error.strerror}"
            )
            return self._unreadable(key, entry, problem, target)
        real = os.path.realpath(path)
        if not self._inside(real):
            return self._unreadable(
                key, entry, f"symbolic link points outside the storage folder (to {real})", real
            )
        if stat.S_ISDIR(followed.st_mode):
            return self._unreadable(
                key,
                entry,
                "symbolic link to a folder: folders behind links are not listed "
                "(link the files themselves, or move the folder here)",
                real,
            )
        if not stat.S_ISREG(followed.st_mode):
            problem = (
                f"symbolic link to something that is not a regular file ({_kind(followed.st_mode)})"
            )
            return self._unreadable(key, entry, problem, real)
        return self._regular_info(key, Path(real), followed)

    def _keys_after(
        self, directory: Path, rel: str, prefix: str, start_after: str | None
    ) -> Iterator[str]:
        """Keys below `directory` in lexicographic order, skipping subtrees that cannot match."""
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        except OSError as error:
            raise StorageError(
                f"cannot list folder {rel or '/'} in {self.describe()}: {error.strerror}"
            ) from error
        # Order by the key each entry yields: a directory "a" sorts as "a/", as in S3. Links
        # are never descended, so a link to a folder is one (unreadable) entry.
        children = sorted(
            (
                f"{rel}{entry.name}/"
                if entry.is_dir(follow_symlinks=False)
                else f"{rel}{entry.name}",
                entry,
            )
            for entry in entries
        )
        for key, entry in children:
            if key.endswith("/"):
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
        listed = []
        for key in keys:
            try:
                listed.append(self._describe(key, self._read_path(key)))
            except ObjectNotFound:
                continue  # removed since the folder was read
        return listed

    def head(self, key: str) -> ObjectInfo:
        return self._describe(key, self._read_path(key))

    def open(self, key: str) -> AbstractContextManager[IO[bytes]]:
        info = self.head(key)
        if info.problem is not None:
            raise ObjectUnreadable(info.problem)
        path = self._read_path(key)
        real = Path(os.path.realpath(path)) if path.is_symlink() else path
        return cast(IO[bytes], io.BufferedReader(_ObjectReader(_open_regular(real, key), key)))

    def known_md5(self, reader: IO[bytes]) -> str | None:
        # The hash a listing cached for the identity the file was opened with, while the open
        # file still has it: nothing was written to it since it was hashed.
        raw = getattr(reader, "raw", None)
        if not isinstance(raw, _ObjectReader) or raw.closed:
            return None
        if raw.identity() != raw.opened_as:
            return None
        return _ETAGS.get(raw.opened_as)

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
        return self.head(key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
