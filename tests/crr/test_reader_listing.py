"""``Reader.streams`` answers a listing equal to the last one with the last answer and parses
only the keys a listing adds after the last one: whatever sequence of listings the store
gives (keys added at the end, in the middle, removed, new streams, worker streams, keys that
are not manifests), each answer must be the one a reader with no memory of earlier polls
gives. ``flk.sim.replication.Bucket.listed`` (the simulator's object store listing) reads a
prefix's key range by bisection: the keys the reference scan finds, in order."""

from __future__ import annotations

from bisect import bisect_left

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.replication.reading import Reader, Topology
from flk.impl.storage.walformat import manifest_name, segment_name
from flk.impl.testing.crashfs import CrashableMemoryFileSystem


class ListingStore:
    """An object store whose ``list`` answers the listing the test sets."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def list(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.keys if k.startswith(prefix))


def _reader(store) -> Reader:
    return Reader(store, Topology.full_mesh(["eu", "us"], "us", include_self=True), None, "/crr/read.json",
                  fs=CrashableMemoryFileSystem())


def _key(stream: str, first: int, manifest: bool) -> str:
    name = segment_name(first)
    return f"{stream}/{manifest_name(name) if manifest else name}"


KEYS = st.builds(_key, st.sampled_from(["eu", "eu/w1", "eu/w2", "eux", "us"]), st.integers(0, 40), st.booleans())


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.lists(KEYS, max_size=6), st.integers(0, 3)), min_size=1, max_size=12))
def test_streams_answer_what_a_fresh_reader_answers(steps):
    store = ListingStore()
    reader = _reader(store)
    for added, dropped in steps:
        store.keys = sorted(set(store.keys[dropped:] + added))
        for source in ("eu", "us"):
            got = reader.streams(source)
            assert got == _reader(store).streams(source)
            assert list(got) == sorted(got)


def test_an_unchanged_listing_is_answered_from_the_last_poll():
    store = ListingStore()
    store.keys = [_key("eu", 0, True), _key("eu", 0, False)]
    reader = _reader(store)
    first = reader.streams("eu")
    assert first == {"eu": [(0, segment_name(0))]}
    assert reader.streams("eu") is first
    store.keys.append(_key("eu", 5, True))
    assert reader.streams("eu") == {"eu": [(0, segment_name(0)), (5, segment_name(5))]}
    assert first == {"eu": [(0, segment_name(0))]}  # an earlier answer is not changed


def _listed_reference(bucket, prefix: str, now: float) -> list[str]:
    keys, out = bucket.keys, []
    for i in range(bisect_left(keys, prefix), len(keys)):
        if not keys[i].startswith(prefix):
            break
        if bucket.objects[keys[i]][2] <= now:
            out.append(keys[i])
    return out


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.dictionaries(st.text(st.sampled_from("ab/\u00e9\U0010ffff"), max_size=5), st.sampled_from([0.0, 1.0, 2.0]),
                       max_size=25),
       st.text(st.sampled_from("ab/\u00e9\U0010ffff"), max_size=3), st.sampled_from([0.5, 1.0, 5.0]))
def test_bucket_listing_is_the_prefix_scan(objects, prefix, now):
    from flk.sim.replication import Bucket

    bucket = Bucket.__new__(Bucket)  # only the key index: no fabric, no network
    bucket.objects, bucket.keys, bucket.pending = {}, [], {}
    for key, visible in objects.items():
        bucket.add(key, (b"", {}, visible))
    assert bucket.keys == sorted(objects)
    assert bucket.listed(prefix, now) == _listed_reference(bucket, prefix, now)
