"""A CSV COPY's input handed, as the COPY reads it, to a worker thread in whole records.

Whoever reads the same bytes beside the raw COPY (the clean stage through `clean_seam`, the
business-date reader) gets them from here: `wrap()` the COPY's body, `close()` after the COPY,
and the worker takes `batches()` of about BATCH_BYTES, each ending at a record end. `stop()`
abandons the work: the COPY is never held up by a worker that has given up.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Iterator
from typing import IO, cast

from analytics_pipelines.lib.chunk_reader import ChunkReader
from analytics_pipelines.lib.ingest.streams import chunks_of

# Bytes parsed per batch: large enough for polars' parallel parser, small enough to keep
# memory flat and the worker close behind the COPY.
BATCH_BYTES = 8 << 20
QUEUE_CHUNKS = 32
MAX_RECORD_BYTES = 8 * BATCH_BYTES
_END = b""


class UnreadableRecords(ValueError):
    """The bytes cannot be read beside the COPY exactly as COPY reads them."""


class UnclosedRecord(UnreadableRecords):
    """No record end in a long stretch: most likely an unclosed quote."""


def record_end(buffer: bytes, quote: bytes) -> int:
    """Index just past the last line end outside quotes (COPY's rule: any quote toggles).

    `buffer` starts at a record boundary, so a line end is outside quotes when the quotes
    before it are even in number.
    """
    end = buffer.rfind(b"\n")
    quotes = buffer.count(quote, 0, end) if end >= 0 else 0
    while end >= 0:
        if quotes % 2 == 0:
            return end + 1
        earlier = buffer.rfind(b"\n", 0, end)
        quotes -= buffer.count(quote, max(earlier, 0), end)
        end = earlier
    return 0


def stray_quote(delimiter: str, quote: str) -> re.Pattern[bytes]:
    """A quote with ordinary characters on both sides: neither opens, closes nor is doubled.
    COPY and polars read such a value differently."""
    d, q = re.escape(delimiter.encode()), re.escape(quote.encode())
    return re.compile(b"[^" + d + b"\n" + q + b"]" + q + b"[^" + d + b"\r\n" + q + b"]")


class RecordTee:
    """The chunks a COPY reads, queued for one worker thread (`work`, run by `start()`)."""

    def __init__(self, delimiter: str, quote: str, work: Callable[[], None], name: str) -> None:
        self.quote = quote.encode()
        self._stray = stray_quote(delimiter, quote)
        self.stopped = threading.Event()
        self._chunks: queue.Queue[bytes] = queue.Queue(QUEUE_CHUNKS)
        self._thread = threading.Thread(target=work, name=name)

    def start(self) -> None:
        self._thread.start()

    # -- loader side -------------------------------------------------------------------------

    def wrap(self, body: IO[bytes]) -> IO[bytes]:
        """The COPY's input, handing every chunk it reads to the worker as well."""
        return cast(IO[bytes], ChunkReader(self._fed(chunks_of(body))))

    def _fed(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self._put(chunk, lambda: not self.stopped.is_set())
            yield chunk

    def close(self) -> None:
        """The COPY has read everything: the worker can finish its last batch."""
        self._put(_END, self._thread.is_alive)

    def _put(self, item: bytes, waiting: Callable[[], bool]) -> None:
        """Queue `item` as long as `waiting()` says someone will take it."""
        while waiting():
            try:
                self._chunks.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def stop(self) -> None:
        """Give up: the worker's batches end and feeding no longer waits for it."""
        self.stopped.set()
        self.close()

    def join(self) -> None:
        if self._thread.ident is not None:
            self._thread.join()

    # -- worker side -------------------------------------------------------------------------

    def _next_chunk(self) -> bytes:
        """The next chunk; the end once stopped and nothing is left."""
        while True:
            try:
                return self._chunks.get(timeout=0.2)
            except queue.Empty:
                if self.stopped.is_set():
                    return _END

    def batches(self) -> Iterator[bytes]:
        """Whole CSV records, about BATCH_BYTES at a time; UnreadableRecords when no record
        ends in a long stretch or a quote sits inside an unquoted value (COPY and a CSV parser
        read such a value differently)."""
        for batch in self._record_batches():
            if self.quote in batch and self._stray.search(batch):
                raise UnreadableRecords("a quote character inside an unquoted value")
            yield batch

    def _record_batches(self) -> Iterator[bytes]:
        batch_bytes = BATCH_BYTES
        pending: list[bytes] = []
        size = 0
        while True:
            chunk = self._next_chunk()
            if chunk == _END:
                break
            pending.append(chunk)
            size += len(chunk)
            if size < batch_bytes:
                continue
            buffer = b"".join(pending)
            cut = record_end(buffer, self.quote)
            if cut == 0:
                if size > MAX_RECORD_BYTES:
                    raise UnclosedRecord("no record end in a long stretch (an unclosed quote?)")
                pending, size = [buffer], len(buffer)
                continue
            yield buffer[:cut]
            rest = buffer[cut:]
            pending, size = [rest], len(rest)
        tail = b"".join(pending)
        if tail.strip():
            yield tail
