"""The ObjectStore contract on memory, a directory (real disk and the crashable
memory disk) and S3 (moto's standalone HTTP server on loopback)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.core.errors import InvalidInput
from flk.impl.storage.objectstore import (
    DirectoryObjectStore,
    MemoryObjectStore,
    ObjectNotFound,
    ObjectStoreUnavailable,
    S3ObjectStore,
    check_object_store_url,
    open_object_store,
)
from flk.impl.testing.crashfs import CrashableMemoryFileSystem

from .conftest import _free_port

_n = iter(range(10**6))


def s3_store(url: str) -> S3ObjectStore:
    return S3ObjectStore(f"flk-test-{next(_n)}", endpoint_url=url, create_bucket=True,
                         aws_access_key_id="test", aws_secret_access_key="test")


@pytest.fixture(params=["memory", "dir-os", "dir-memfs", "s3"])
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryObjectStore()
    if request.param == "dir-os":
        return DirectoryObjectStore(str(tmp_path / "objs"))
    if request.param == "dir-memfs":
        fs = CrashableMemoryFileSystem()
        return DirectoryObjectStore("/objs", fs=fs)
    return s3_store(request.getfixturevalue("moto_url"))


def test_put_is_write_once_get_exists_metadata(store):
    assert not store.exists("eu/seg-1.log")
    assert store.put("eu/seg-1.log", b"abc", {"sha256": "x", "count": "3"}) is True
    assert store.put("eu/seg-1.log", b"OTHER") is False  # idempotent: the first write stays
    assert store.get("eu/seg-1.log") == b"abc"
    assert store.get_metadata("eu/seg-1.log") == {"count": "3", "sha256": "x"}
    assert store.exists("eu/seg-1.log")
    with pytest.raises(ObjectNotFound):
        store.get("eu/nope")
    with pytest.raises(ObjectNotFound):
        store.get_metadata("eu/nope")


def test_list_prefix_sorted_and_delete(store):
    for k in ["us/b", "eu/w1/seg-2", "eu/seg-2", "eu/seg-10", "eux/a", "eu/seg-1"]:
        store.put(k, k.encode())
    assert store.list("eu/") == ["eu/seg-1", "eu/seg-10", "eu/seg-2", "eu/w1/seg-2"]
    assert store.list("eu/seg-1") == ["eu/seg-1", "eu/seg-10"]
    assert store.list("") == sorted(["us/b", "eu/w1/seg-2", "eu/seg-2", "eu/seg-10", "eux/a", "eu/seg-1"])
    store.delete("eu/seg-2")
    store.delete("eu/seg-2")  # absent: no error
    assert "eu/seg-2" not in store.list("eu/")
    assert store.list("zz/") == []


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../x", "a/../b", ".hidden", "a/.meta", "a b", "x.tmp"])
def test_bad_keys_are_rejected_with_invalid_input(key):
    for s in (MemoryObjectStore(), DirectoryObjectStore("/o", fs=CrashableMemoryFileSystem())):
        with pytest.raises(InvalidInput):
            s.put(key, b"")


def test_bad_metadata_rejected():
    with pytest.raises(InvalidInput):
        MemoryObjectStore().put("a", b"", {"Upper": "x"})
    with pytest.raises(InvalidInput):
        MemoryObjectStore().put("a", b"", {"k": "\u00e9"})


def test_memory_store_unavailable_flag():
    s = MemoryObjectStore()
    s.put("a", b"1")
    s.available = False
    for call in (lambda: s.put("b", b""), lambda: s.get("a"), lambda: s.exists("a"), lambda: s.list(""),
                 lambda: s.delete("a"), lambda: s.get_metadata("a")):
        with pytest.raises(ObjectStoreUnavailable):
            call()
    s.available = True
    assert s.get("a") == b"1"


def test_directory_store_put_is_durable_across_a_crash():
    fs = CrashableMemoryFileSystem()
    s = DirectoryObjectStore("/o", fs=fs)
    s.put("eu/seg-1.log", b"data", {"k": "v"})
    fs.crash()
    s2 = DirectoryObjectStore("/o", fs=fs)
    assert s2.get("eu/seg-1.log") == b"data"
    assert s2.get_metadata("eu/seg-1.log") == {"k": "v"}


def test_directory_store_shared_by_two_instances(tmp_path):
    a, b = DirectoryObjectStore(str(tmp_path)), DirectoryObjectStore(str(tmp_path))
    a.put("eu/x", b"1")
    assert b.get("eu/x") == b"1" and b.put("eu/x", b"2") is False
    assert b.list("") == ["eu/x"]


def test_s3_unreachable_raises_unavailable():
    s = S3ObjectStore("b", endpoint_url=f"http://127.0.0.1:{_free_port()}", aws_access_key_id="t",
                      aws_secret_access_key="t", connect_timeout=0.3, read_timeout=0.3, max_attempts=1)
    with pytest.raises(ObjectStoreUnavailable):
        s.exists("a")
    with pytest.raises(ObjectStoreUnavailable):
        s.list("")


def test_open_object_store_urls(tmp_path):
    assert isinstance(open_object_store("memory://"), MemoryObjectStore)
    assert isinstance(open_object_store(f"file://{tmp_path}"), DirectoryObjectStore)
    assert isinstance(open_object_store(str(tmp_path)), DirectoryObjectStore)
    with pytest.raises(InvalidInput):
        open_object_store("")


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://host/dir", "unknown scheme 'ftp://'"),
    ("s4://bucket", "unknown scheme 's4://'"),
    ("S3://", "s3:// needs a bucket"),
    ("s3://?endpoint=http://127.0.0.1:9", "s3:// needs a bucket"),
    ("s3:///prefix", "s3:// needs a bucket"),
    ("file://", "file:// needs a path"),
])
def test_a_url_no_store_opens_is_refused_not_taken_for_a_directory(tmp_path, monkeypatch, url, reason):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput, match=reason):
        open_object_store(url)
    assert not list(tmp_path.iterdir())  # no local directory named after the typo


_SECRET = "Zq9SECRET"


@settings(max_examples=200, deadline=None)
@given(scheme=st.from_regex(r"[A-Za-z][A-Za-z0-9+.-]{0,6}", fullmatch=True), rest=st.text(max_size=20))
def test_object_store_urls_are_opened_or_refused_without_quoting_them(scheme, rest):
    """Any ``scheme://...``: accepted exactly for file, s3 (with a bucket) and memory, else
    InvalidInput; the message names at most the scheme, never the rest (credentials)."""
    url = f"{scheme}://{_SECRET}{rest}"
    try:
        check_object_store_url(url)
    except InvalidInput as exc:
        assert _SECRET not in str(exc)
        assert scheme.lower() not in ("file", "s3"), exc  # both have a non-empty path / bucket here
        return
    assert scheme.lower() in ("file", "s3")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["put", "delete"]), st.sampled_from(["a/x", "a/y", "b/x", "a/w1/z"]),
                              st.binary(max_size=8)), max_size=12))
def test_directory_store_agrees_with_memory_model(ops):
    d = DirectoryObjectStore("/o", fs=CrashableMemoryFileSystem())
    m = MemoryObjectStore()
    for op, k, data in ops:
        if op == "put":
            assert d.put(k, data) == m.put(k, data)
        else:
            d.delete(k)
            m.delete(k)
    for p in ("", "a/", "b/", "a/w"):
        assert d.list(p) == m.list(p)
    for k in m.list(""):
        assert d.get(k) == m.get(k)
