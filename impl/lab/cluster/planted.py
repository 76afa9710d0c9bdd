"""Planted server bugs for ``flk cluster run --plant NAME[@REGION]``: a region's real
``flk serve`` with a named mutation, so a test can see the cluster runner's black-box
checks catch a broken deployment, with a witness, every run.

Why this module exists: the simulator plants its bugs as mutant classes
(:mod:`flk.impl.testing.planted`, ``flk sim run --plant``); a real cluster runs
``flk serve`` processes, so the mutation has to happen inside the server process.
The runner starts a planted region as ``python -m flk.impl.lab.cluster.planted NAME
[--window S] serve ...``: this module patches the server's classes in that process,
then runs the ordinary CLI. Production code never imports this module.

Bugs:

* ``racy-dedup`` -- the SQLite dedup store's put-if-absent done as check, pause, act:
  read the keys, sleep ``--window`` seconds, then write every key that was absent
  *unconditionally* (an upsert that overwrites); and each synced batch finishes (its
  store put and answers) on its own thread while up to 64 batches run at once, as a
  server without the batching driver's serial finishing would. Two conflicting first
  writes of one key that reach the store within the window are then both answered 200,
  the later one overwriting the earlier: INV-FWW (two acknowledged digests) and
  INV-NO-ACKED-LOSS (the first acknowledged write is gone from the final reads).
  The pause makes the race window deterministic instead of lucky. The same bug as the
  live history test's planted server (``tests/server/planted_racy_dedup``).
"""

from __future__ import annotations

import os
import sys
import threading
import time

PLANTS = {
    "racy-dedup": "SQLite put-if-absent as check, pause (--window s), unconditional upsert; synced batches "
                  "finish on their own threads, 64 at once (breaks INV-FWW, INV-NO-ACKED-LOSS)",
}
UPSERT = ("INSERT INTO dedup (tenant, pcs_id, expires_at, outcome) VALUES (?, ?, ?, ?) "
          "ON CONFLICT (tenant, pcs_id) DO UPDATE SET expires_at = excluded.expires_at, "
          "outcome = excluded.outcome")
DEPTH = 64  # batches in flight at once in the planted server


def plant_racy_dedup(window_s: float) -> None:
    """Patch this process's SQLite store and batch driver (see the module docstring)."""
    os.environ["SQLITE_LAYOUT"] = "keyed"  # the unconditional upsert needs the keyed table's key index
    from flk.impl.dedup.base import StoredOutcome, check_ttl
    from flk.impl.dedup.sqlite import SqliteStore
    from flk.impl.server.batchdriver import BatchDriver
    from flk.impl.verifier.core import finish_batch

    def racy_put_many_if_absent(self, items, now, ttl_s=None):
        ttl = check_ttl(ttl_s, self.ttl_s)
        seen = self.get_many([(tenant, pcs_id) for tenant, pcs_id, _ in items], now)  # the check
        time.sleep(window_s)  # the window
        out = []
        for (tenant, pcs_id, outcome), stored in zip(items, seen, strict=True):
            if stored is not None:
                out.append((False, stored))
                continue
            row = (tenant, pcs_id, now + ttl, outcome.to_bytes())
            self._run(lambda c, row=row: c.execute(UPSERT, row))  # the act, unconditional
            out.append((True, outcome))
        return out

    def racy_put_many_fresh_if_absent(self, items, fresh, now, ttl_s=None):
        status, first_seen, region, version = fresh  # the verifier's fresh rows, built and put racily
        built = [(t[0], t[1], StoredOutcome(t[2], status, t[3], first_seen, region, version)) if len(t) == 4
                 else t for t in items]
        return [None if won else got for won, got in racy_put_many_if_absent(self, built, now, ttl_s)]

    SqliteStore.put_many_if_absent = racy_put_many_if_absent
    SqliteStore.put_many_fresh_if_absent = racy_put_many_fresh_if_absent
    SqliteStore.put_if_absent = lambda self, t, p, o, now, ttl_s=None: racy_put_many_if_absent(
        self, [(t, p, o)], now, ttl_s)[0]

    init = BatchDriver.__init__

    def deep_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.formation.depth = DEPTH

    def overlapping_synced(self, count, error, took=0.0):
        for _ in range(count):
            job = self._appended.popleft()

            def finish(job=job):
                try:
                    responses, failure = finish_batch(job.core, job.first, self.store, self.wal, error is None), None
                except BaseException as exc:  # noqa: BLE001 -- every request of the batch gets it (500)
                    responses, failure = [], exc
                self._answer(job.batch, job.loop, responses, failure)

            threading.Thread(target=finish, name="planted-finish", daemon=True).start()

    BatchDriver.__init__ = deep_init
    BatchDriver._synced = overlapping_synced


def main(argv: list[str]) -> int:
    """``NAME [--window S] CLI-ARGS...``: plant NAME in this process, then run ``flk CLI-ARGS``."""
    if not argv or argv[0] not in PLANTS:
        print(f"planted: first argument one of {', '.join(PLANTS)}", file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    window = 1.0
    if rest[:1] == ["--window"]:
        window, rest = float(rest[1]), rest[2:]
    if name == "racy-dedup":
        plant_racy_dedup(window)
    from flk.impl.lab.cli import main as cli

    return cli(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
