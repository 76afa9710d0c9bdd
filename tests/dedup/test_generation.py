"""The generation marker of the networked dedup stores: a marker
written on first use, checked on every new connection and every ping; a store whose
marker is gone (it came back empty) or different (replaced) fails every call with
``GenerationLost`` -- sticky -- until a new marker is accepted (``force``)."""

from __future__ import annotations

import time
import uuid

import pytest

from flk.impl.dedup.base import GenerationLost, StoredOutcome
from flk.impl.dedup.postgres import PostgresStore
from flk.impl.dedup.redis import RedisStore

NOW = time.time()
OUT = StoredOutcome("ab" * 32, 200, b"{}", NOW, "eu", "p")


def open_backend(kind: str, redis_url: str | None, postgres_dsn: str | None):
    ns = uuid.uuid4().hex[:10]
    if kind == "redis":
        return RedisStore(redis_url, prefix=f"flk:test:{ns}:", timeout_s=2.0)
    return PostgresStore(postgres_dsn, table=f"flk_gen_{ns}", timeout_s=2.0)


def wipe_marker(store) -> None:
    if isinstance(store, RedisStore):
        store._r.delete(store.generation_key)
    else:
        store._run(lambda c: c.execute(f"DELETE FROM {store.generation_table}"), check=False)


@pytest.fixture(params=["redis", "postgres"])
def store(request):
    if request.param == "redis":
        url, dsn = request.getfixturevalue("redis_url"), None
    else:
        url, dsn = None, request.getfixturevalue("postgres_dsn")
    s = open_backend(request.param, url, dsn)
    yield s
    s.close()


def test_marker_written_once_then_checked_by_ping_and_sticky(store) -> None:
    assert store.read_generation() is None
    first = store.create_generation("g1")
    assert first == "g1" and store.create_generation("g2") == "g1"  # first use only
    store.expect_generation("g1")
    assert store.ping() and store.put_if_absent("t", "a" * 64, OUT, NOW)[0]
    wipe_marker(store)  # what an empty restart looks like to the marker
    assert store.ping() is False
    assert store.lost and "lost its data" in store.lost
    with pytest.raises(GenerationLost):
        store.get("t", "a" * 64, NOW)
    store.create_generation("g1")  # the marker alone coming back does not undo the loss
    with pytest.raises(GenerationLost):
        store.get("t", "a" * 64, NOW)
    assert store.create_generation("g3", force=True) == "g3"  # an operator's acceptance
    store.expect_generation("g3")
    assert store.get("t", "a" * 64, NOW) is not None


def test_a_replaced_store_is_named_as_replaced(store) -> None:
    store.create_generation("mine")
    store.expect_generation("mine")
    store.create_generation("theirs", force=True)
    store.lost = None
    store.expected_generation = "mine"
    assert store.ping() is False and "replaced" in store.lost
