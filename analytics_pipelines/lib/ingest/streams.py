"""Byte streams for loading: hash while reading, put bytes back, decompress."""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from typing import IO, cast

from analytics_pipelines.lib.ingest.errors import FileRejected

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20


class HashingReader(io.RawIOBase):
    """Pass-through reader that computes the MD5 and size of every byte the store delivered."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read(-1 if size is None else size)
        self._md5.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read what is left (e.g. a Parquet reader stopped early) so the hash covers the object."""
        while self.read(CHUNK):
            pass

    @property
    def hexdigest(self) -> str:
        return self._md5.hexdigest()


class PrefixedReader(io.RawIOBase):
    """A reader that first returns `prefix`, then the rest of `raw` (bytes already consumed)."""

    def __init__(self, prefix: bytes, raw: IO[bytes]) -> None:
        self._prefix = prefix
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self._prefix:
            if size is None or size < 0 or size >= len(self._prefix):
                head, self._prefix = self._prefix, b""
                if size is None or size < 0:
                    return head + self._raw.read()
                return head
            head, self._prefix = self._prefix[:size], self._prefix[size:]
            return head
        return self._raw.read(-1 if size is None else size)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class SafeGzipReader(io.RawIOBase):
    """Streaming gunzip that turns corrupt or truncated input into a FileRejected with a reason."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._gzip = gzip.GzipFile(fileobj=raw, mode="rb")

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self._gzip.read(-1 if size is None else size)
        except EOFError:
            raise FileRejected(
                "the gzip data is truncated (the file ends before the end of the compressed "
                "stream; was the upload interrupted?)"
            ) from None
        except (gzip.BadGzipFile, zlib.error, OSError) as error:
            raise FileRejected(f"the gzip data is corrupt ({error})") from None

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def peek(raw: IO[bytes], size: int) -> tuple[bytes, IO[bytes]]:
    """The first `size` bytes and a reader that still yields them (`io.BufferedReader.peek`).

    One read of `raw` fills the buffer; the readers given here (the store's body through
    HashingReader, gunzip) return as many bytes as asked for unless the data ends.
    """
    if isinstance(raw, io.BufferedReader):
        buffered = raw
    else:
        buffered = io.BufferedReader(cast(io.RawIOBase, raw), CHUNK)
    return buffered.peek(size)[:size], cast(IO[bytes], buffered)


def maybe_decompress(raw: IO[bytes], compression: str, key: str) -> IO[bytes]:
    """Gunzip when the catalog says gzip, or (auto) when the name or the magic bytes say so."""
    if compression == "none":
        return raw
    head, stream = peek(raw, 2)
    if compression == "gzip" or head == GZIP_MAGIC or key.endswith(".gz"):
        if head != GZIP_MAGIC:
            raise FileRejected(
                "the file is not gzip-compressed although its name or the catalog says so"
            )
        return cast(IO[bytes], SafeGzipReader(stream))
    return stream
