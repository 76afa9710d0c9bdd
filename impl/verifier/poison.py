"""The poison-record replay policy: one owner for start-up and cross-region replay.

Why this module exists: a replay (the server's start-up replay of its inbox WAL,
:class:`flk.impl.server.pipeline.ServerPipeline`; a region's replay of shipped
records, :meth:`flk.impl.replication.applying.ReplayApplier.apply_isolating`)
must never stop at one record it cannot process, and must never mistake a store
outage for such a record (SPEC.md section 11.2, "Poison records"). The rule,
written once here:

1. *Poison* is a record whose processing raises, alone, anything but
   :class:`StoreUnavailable`: a record that does not decode, a bug the record
   triggers, a key or value the store rejects as invalid (``ValueError`` from
   :func:`flk.impl.dedup.base.check_key`). That failure is the record's own and
   comes back on every attempt. A batch of records is run at once; if that
   raises so, each record is run alone, and each one that raises alone is handed
   to ``on_poison`` (the caller quarantines it) and skipped: the records behind
   it are replayed.
2. A store refusal -- :class:`StoreUnavailable` raised (a down shard, an open
   breaker, a timeout, a full disk) or a 503 answer -- is never evidence of
   poison, however often it repeats and whether or not the store answers a
   ping: a sharded store answers pings while it still holds one shard out, and
   a quarantined good record is a key that never reaches this store
   (INV-CONVERGENCE). The replay stops with :class:`StoreUnavailable` at the
   first refusal and is run again later (replaying again is a no-op,
   INV-IDEMPOTENT-REPLAY): the reader after its bounded backoff, the server's
   start-up replay at the worker's next start.

A store that refuses one record's write for ever while it answers as an
outage stalls the replay instead of losing the record: visible (the reader's
``failures``/``last_error``; a worker that does not start), never silent.

Sans-I/O: the runs, the ping and the quarantine are callables of the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from ..dedup import StoreUnavailable

__all__ = ["PoisonPolicy", "STORED", "DONE", "REFUSED", "POISON", "answered"]

STORED = "stored"  # the run wrote a new outcome to the store
DONE = "done"  # answered otherwise (a dedup hit, a 4xx, refused at home)
REFUSED = "refused"  # the store refused it (503): an outage, never poison
POISON = "poison"  # handed to ``on_poison`` and skipped

T = TypeVar("T")


class PoisonPolicy(Generic[T]):
    """One replay's poison-record policy (see the module docstring).

    ``store_answers()``: does the store answer a ping now (only named in the
    outage's message, never a reason to quarantine). ``on_poison(item, error)``:
    the caller quarantines ``item``. ``poisoned``: records handed to ``on_poison``."""

    def __init__(self, store_answers: Callable[[], bool], on_poison: Callable[[T, BaseException], None],
                 what: str = "replay") -> None:
        self.what = what  # named in the outage's message ("WAL replay", "replay")
        self.store_answers = store_answers
        self.on_poison = on_poison
        self.poisoned = 0

    def run(self, items: Sequence[T], run_batch: Callable[[Sequence[T]], Sequence[str]],
            run_one: Callable[[T], str]) -> list[str]:
        """Run ``items`` as one batch (``run_batch``: one of STORED/DONE/REFUSED per item);
        if it raises (not :class:`StoreUnavailable`), one by one (``run_one``). Returns each
        item's result (:data:`POISON` for the ones handed to ``on_poison``); raises
        :class:`StoreUnavailable` at the first refusal (rule 2)."""
        try:
            results = list(run_batch(items))  # StoreUnavailable propagates: an outage
        except StoreUnavailable:
            raise
        except Exception:  # noqa: BLE001 -- a poison record among them: one by one
            return [self._one(item, run_one) for item in items]
        if REFUSED in results:
            raise self._outage()
        return results

    def _one(self, item: T, run_one: Callable[[T], str]) -> str:
        try:
            result = run_one(item)  # StoreUnavailable propagates: an outage, not this record
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 -- a poison record: quarantined, replay continues
            self.poisoned += 1
            self.on_poison(item, exc)
            return POISON
        if result == REFUSED:
            raise self._outage()
        return result

    def _outage(self) -> StoreUnavailable:
        pings = "it answers pings: a shard, its breaker or a timeout refused" if self.store_answers() \
            else "it does not answer pings"
        return StoreUnavailable(f"dedup store unavailable during {self.what} ({pings}; retried, never quarantined)")


def answered(status: int, replayed: bool) -> str:
    """The policy's result of a replayed record answered ``status`` (``replayed``: the
    answer came from the store, ``Idempotent-Replayed``)."""
    if status == 503:
        return REFUSED
    return STORED if status in (200, 202) and not replayed else DONE
