"""A shipped segment's object metadata names the bytes that were uploaded.

The shipper takes the segment's ``sha256`` metadata from its verified manifest (the
verification compared the two) instead of hashing the segment again: for every segment,
with and without a shared :class:`~flk.impl.replication.applying.ReplayMemo`, the metadata
is SHA-256 of the uploaded object, with its first index and record count.
"""

from __future__ import annotations

import hashlib

import pytest
from crr.regions import NOW, Region, variants

from flk.impl.replication.applying import ReplayMemo
from flk.impl.storage.objectstore import MemoryObjectStore
from flk.impl.storage.walformat import LOG_SUFFIX


@pytest.mark.parametrize("memo", [None, ReplayMemo(uses=2)])
def test_shipped_metadata_is_the_uploaded_segment(memo):
    objects = MemoryObjectStore()
    eu = Region("eu", objects, ["eu", "us"])
    eu.shipper.memo = memo
    counts = [3, 1, 4]
    requests = variants(sum(counts), 1)  # distinct keys
    at = NOW
    for n in counts:  # one segment per ship
        for raw, t, _, _ in requests[:n]:
            assert eu.submit(raw, t, at).status == 200
            at += 1.0
        requests = requests[n:]
        eu.shipper.step(at + 5)
        at += 10.0
    segments = [k for k in objects.list("eu/") if k.endswith(LOG_SUFFIX)]
    assert len(segments) == len(counts)
    first = 0
    for key, n in zip(segments, counts, strict=True):
        meta = objects.get_metadata(key)
        assert meta == {"first-index": str(first), "count": str(n),
                        "sha256": hashlib.sha256(objects.get(key)).hexdigest()}
        first += n
