"""One contract, two stores: the local folder and S3 over HTTP (moto server)."""

from __future__ import annotations

import hashlib
import io

import pytest

from analytics_pipelines.lib.storage import (
    ObjectNotFound,
    ObjectStore,
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
