"""Byte streams for loading, as generators of chunks: hash, decompress, drop trailing blank lines.

`ChunkReader` turns any of them back into the file COPY and the format readers read.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, cast

from analytics_pipelines.lib.chunk_reader import CHUNK, ChunkReader
from analytics_pipelines.lib.ingest.errors import FileRejected
from analytics_pipelines.lib.storage import ObjectUnreadable

GZIP_MAGIC = b"\x1f\x8b"


def chunks_of(raw: IO[bytes]) -> Iterator[bytes]:
    """`raw` read CHUNK bytes at a time, to its end."""
    return iter(lambda: raw.read(CHUNK), b"")


class HashingReader(ChunkReader):
    """Pass-through reader that gives the MD5 and size of every byte the store delivered.

    `known_md5` asks the store for the content's MD5 it already has (`ObjectStore.known_md5`):
    when it has one at the start, the bytes are only counted (hashing a 161 MB file again was
    0.3 of the raw loader's 1 client CPU-s), and at the end the store must still vouch for the
    same hash, else the object changed while it was read and is not taken as it was read
    (ObjectUnreadable).
    """

    def __init__(self, raw: IO[bytes], known_md5: Callable[[], str | None] | None = None) -> None:
        self._known_md5 = known_md5
        self._vouched = known_md5() if known_md5 is not None else None
        self._md5 = None if self._vouched else hashlib.md5(usedforsecurity=False)
        self.size = 0
        super().__init__(self._hashed(raw))

    def _hashed(self, raw: IO[bytes]) -> Iterator[bytes]:
        md5 = self._md5
        for chunk in chunks_of(raw):
            if md5 is not None:
                md5.update(chunk)
            self.size += len(chunk)
            yield chunk

    def drain(self) -> None:
        """Read what is left (e.g. a Parquet reader stopped early) so the hash covers the object."""
        while self.read(CHUNK):
            pass

    @property
    def hexdigest(self) -> str:
        if self._md5 is not None:
            return self._md5.hexdigest()
        assert self._known_md5 is not None
        if self._known_md5() != self._vouched:
            raise ObjectUnreadable(
                "the file changed while it was being read; its new content is loaded as a "
                "new version at the next listing"
            )
        return cast(str, self._vouched)


def gunzipped(raw: IO[bytes]) -> Iterator[bytes]:
    """Streaming gunzip; corrupt or truncated input becomes a FileRejected with a reason."""
    try:
        yield from chunks_of(cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")))
    except EOFError:
        raise FileRejected(
            "the gzip data is truncated (the file ends before the end of the compressed "
            "stream; was the upload interrupted?)"
        ) from None
    except (gzip.BadGzipFile, zlib.error, OSError) as error:
        raise FileRejected(f"the gzip data is corrupt ({error})") from None


def without_trailing_blank_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """A CSV body's chunks, except the empty lines at its very end.

    Exports often end with one or more blank lines; COPY would read each as a row with missing
    fields and refuse the whole file. Only the run of line-end bytes at the current end is held
    back, so memory stays bounded. At the end of the input the run shrinks to the first line
    end of it (the last row keeps its own CRLF or LF, which COPY needs to match the file's
    other lines); a body of nothing but line ends becomes empty. Blank lines inside the file
    are passed on and still reported by COPY.
    """
    held = b""
    data_seen = False
    for chunk in chunks:
        data = held + chunk if held else chunk
        # Most chunks end inside a line: nothing is held back and nothing is copied.
        body = data.rstrip(b"\r\n")
        held = data[len(body) :]
        if body:
            data_seen = True
            yield body
    if data_seen and held:
        end = held.find(b"\n")
        yield held if end < 0 else held[: end + 1]


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
        return cast(IO[bytes], ChunkReader(gunzipped(stream)))
    return stream
