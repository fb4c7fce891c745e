"""One contract, two stores: the local folder and S3 over HTTP (moto server)."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from analytics_pipelines.lib.ingest.streams import HashingReader
from analytics_pipelines.lib.storage import (
    LocalFolderStore,
    ObjectNotFound,
    ObjectStore,
    ObjectUnreadable,
    S3Store,
    StorageError,
    open_store,
)


def test_write_then_head_reports_size_etag_and_time(store: ObjectStore) -> None:
    data = b"order_id,amount\nORD-1,10\n"
    written = store.write("landing/orders/a.csv", data)
    info = store.head("landing/orders/a.csv")
    assert info == written
    assert info.size == len(data)
    assert info.etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert info.modified.tzinfo is not None


def test_same_content_has_same_etag_under_another_key(store: ObjectStore) -> None:
    a = store.write("x/one.csv", b"same")
    b = store.write("y/two.csv", b"same")
    c = store.write("x/one.csv", b"changed")
    assert a.etag == b.etag
    assert c.etag != a.etag


def test_streaming_read_returns_the_bytes(store: ObjectStore) -> None:
    payload = bytes(range(256)) * 40_000  # 10 MB, written from a stream
    store.write("big/blob.bin", io.BytesIO(payload))
    with store.open("big/blob.bin") as handle:
        first = handle.read(1000)
        rest = handle.read()
    assert first + rest == payload


def test_list_is_ordered_bounded_and_resumable(store: ObjectStore) -> None:
    for i in (3, 1, 2, 10):
        store.write(f"landing/orders/f{i:02d}.csv", b"x")
    store.write("landing/orders/sub/deep.csv", b"x")
    store.write("landing/other/no.csv", b"x")
    store.write("landing/orders.csv", b"x")
    first = store.list("landing/orders/", limit=2)
    assert [o.key for o in first] == ["landing/orders/f01.csv", "landing/orders/f02.csv"]
    rest = store.list("landing/orders/", start_after=first[-1].key, limit=10)
    assert [o.key for o in rest] == [
        "landing/orders/f03.csv",
        "landing/orders/f10.csv",
        "landing/orders/sub/deep.csv",
    ]
    assert store.list("landing/orders/", start_after="landing/orders/sub/deep.csv") == []
    assert [o.key for o in store.iter_all("landing/", page_size=2)] == [
        "landing/orders.csv",
        "landing/orders/f01.csv",
        "landing/orders/f02.csv",
        "landing/orders/f03.csv",
        "landing/orders/f10.csv",
        "landing/orders/sub/deep.csv",
        "landing/other/no.csv",
    ]


def test_missing_object_and_delete(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.head("nope.csv")
    with pytest.raises(ObjectNotFound):
        store.open("nope.csv")
    store.write("gone.csv", b"x")
    store.delete("gone.csv")
    store.delete("gone.csv")
    assert store.list("gone") == []


def test_check_passes_on_a_usable_store(store: ObjectStore) -> None:
    store.check()


def test_missing_bucket_is_named(s3_endpoint: str) -> None:
    store = S3Store(
        "no-such-bucket", endpoint_url=s3_endpoint, access_key_id="t", secret_access_key="t"
    )
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        store.check()


def test_missing_folder_is_named(tmp_path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        open_store(f"file://{tmp_path}/absent").check()


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(StorageError, match="expected s3://bucket"):
        open_store("ftp://host/x")


def test_local_keys_cannot_escape_the_folder(local_store) -> None:
    with pytest.raises(StorageError, match="outside"):
        local_store.write("../escape.csv", b"x")


def test_a_known_md5_is_the_content_hash(store: ObjectStore) -> None:
    """What a store vouches for instead of the loader hashing the bytes is their MD5."""
    data = b"order_id,amount\nORD-1,10\n" * 1000
    store.write("landing/orders/a.csv", data)
    with store.open("landing/orders/a.csv") as handle:
        assert handle.read() == data
        known = store.known_md5(handle)
    assert known in (None, hashlib.md5(data, usedforsecurity=False).hexdigest())
    if isinstance(store, LocalFolderStore):
        assert known is not None


def test_a_local_file_written_while_open_is_not_vouched_for(local_store: LocalFolderStore) -> None:
    local_store.write("landing/orders/a.csv", b"a,b\n1,2\n")
    with local_store.open("landing/orders/a.csv") as handle:
        handle.read(2)
        with (local_store.root / "landing/orders/a.csv").open("ab") as writer:
            writer.write(b"3,4\n")  # appended in place, as a slow exporter does
        handle.read()
        assert local_store.known_md5(handle) is None


def test_reading_a_local_file_that_changes_fails_instead_of_keeping_a_torn_read(
    local_store: LocalFolderStore,
) -> None:
    local_store.write("landing/orders/a.csv", b"a,b\n" + b"1,2\n" * 100_000)
    with local_store.open("landing/orders/a.csv") as handle:
        hashing = HashingReader(handle, lambda: local_store.known_md5(handle))
        hashing.read(1000)
        with (local_store.root / "landing/orders/a.csv").open("r+b") as writer:
            writer.seek(500_000)
            writer.write(b"9,9\n")  # rewritten in place, half-way through the read
        hashing.drain()
        with pytest.raises(ObjectUnreadable, match="changed while it was being read"):
            _ = hashing.hexdigest


def test_a_local_etag_follows_the_content_when_the_modification_time_is_set_back(
    local_store: LocalFolderStore,
) -> None:
    """A restore that keeps size and modification time (`cp -p`, rsync) still changes the etag."""
    path = local_store.root / "landing/orders/a.csv"
    first = local_store.write("landing/orders/a.csv", b"a,b\n1,2\n")
    before = os.stat(path)
    path.write_bytes(b"a,b\n3,4\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = local_store.head("landing/orders/a.csv")
    assert again.modified == first.modified and again.size == first.size
    assert again.etag == hashlib.md5(b"a,b\n3,4\n", usedforsecurity=False).hexdigest()
