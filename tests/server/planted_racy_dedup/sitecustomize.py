"""A planted bug for tests: makes the SQLite dedup store's put-if-absent non-atomic.

Why this exists: the black-box history checker must catch a real ``flk serve``
that breaks first-write-wins, over real HTTP. Python imports this module at
start-up when its folder is on ``PYTHONPATH`` (so also in spawned server
workers); it patches nothing unless ``FLK_TEST_RACY_DEDUP_S`` is set.

The bug: put-if-absent done as check, pause, act -- read the keys, sleep
``FLK_TEST_RACY_DEDUP_S`` seconds, then write every key that was absent
*unconditionally* (an upsert that overwrites). And, as a server without the
batching driver would, each request's put runs on its own store thread
(``STORE_THREADS`` of them), concurrently with the others. Two conflicting
first writes that arrive within the pause are then both "won": both answered
200, the later write overwriting the earlier. The pause makes the race window
deterministic instead of lucky. (The batch driver finishes one batch at a time; here
each synced batch finishes on its own thread, so batches overlap as unbatched puts
would: :func:`flk.impl.lab.cluster.planted.plant_racy_dedup`.)
"""

import os

_WINDOW = os.environ.get("FLK_TEST_RACY_DEDUP_S")

if _WINDOW:
    # the mutation itself lives with the cluster runner's planted bugs (one copy of it for both)
    from flk.impl.lab.cluster.planted import plant_racy_dedup

    plant_racy_dedup(float(_WINDOW))
