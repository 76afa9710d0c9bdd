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
deterministic instead of lucky. (The batch driver runs one batch at a time; here
each batch gets its own thread, so batches overlap as unbatched puts would.)
"""

import os

_WINDOW = os.environ.get("FLK_TEST_RACY_DEDUP_S")

if _WINDOW:
    import threading
    import time

    from flk.impl.dedup.base import check_ttl
    from flk.impl.dedup.sqlite import SqliteStore
    from flk.impl.server.batchdriver import BatchDriver

    _UPSERT = ("INSERT INTO dedup (tenant, pcs_id, expires_at, outcome) VALUES (?, ?, ?, ?) "
               "ON CONFLICT (tenant, pcs_id) DO UPDATE SET expires_at = excluded.expires_at, "
               "outcome = excluded.outcome")

    def _racy_put_many_if_absent(self, items, now, ttl_s=None):
        ttl = check_ttl(ttl_s, self.ttl_s)
        seen = self.get_many([(tenant, pcs_id) for tenant, pcs_id, _ in items], now)  # the check
        time.sleep(float(_WINDOW))  # the window
        out = []
        for (tenant, pcs_id, outcome), stored in zip(items, seen, strict=True):
            if stored is not None:
                out.append((False, stored))
                continue
            row = (tenant, pcs_id, now + ttl, outcome.to_bytes())
            self._run(lambda c, row=row: c.execute(_UPSERT, row))  # the act, unconditional
            out.append((True, outcome))
        return out

    SqliteStore.put_many_if_absent = _racy_put_many_if_absent
    SqliteStore.put_if_absent = lambda self, t, p, o, now, ttl_s=None: _racy_put_many_if_absent(
        self, [(t, p, o)], now, ttl_s)[0]

    def _overlapping_batches(self):
        batch = list(self._pending)
        self._pending.clear()
        threading.Thread(target=self._run, args=(batch, self._loop), daemon=True).start()

    BatchDriver._start_batch = _overlapping_batches
