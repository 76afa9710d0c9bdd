"""The poison-record replay policy: one owner for start-up and cross-region replay.

Why this module exists: a replay (the server's start-up replay of its inbox WAL,
:class:`flk.impl.server.pipeline.ServerPipeline`; a region's replay of shipped
records, :meth:`flk.impl.replication.applying.ReplayApplier.apply_isolating`)
must never stop at one record it cannot process, and must never mistake a store
outage for such a record. The rule, written once here:

1. A batch of records is run at once. If that raises unexpectedly (not a store
   outage), each record is run alone: a record that raises alone is *poison*
   -- handed to ``on_poison`` (the caller quarantines it) and skipped.
2. A store refusal (a 503 answer, or :class:`StoreUnavailable` raised) is an
   outage while the store does not answer a ping: :class:`StoreUnavailable`
   propagates and the replay stops (the caller retries later; replaying again is
   a no-op, INV-IDEMPOTENT-REPLAY). While it answers pings, the refused record
   is kept aside and tried once more at :meth:`PoisonPolicy.finish`.
3. At :meth:`PoisonPolicy.finish` a record refused again is poison only if the
   store stored other records of this replay; if it stored nothing, the store is
   what is broken (e.g. its own disk is full) and :class:`StoreUnavailable`
   propagates.

``refusals_are_poison=False`` (a cross-region reader before the store failed a
few polls in a row) makes every refusal an outage (rule 2 without the ping).

Sans-I/O: the runs, the ping and the quarantine are callables of the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from ..dedup import StoreUnavailable

__all__ = ["PoisonPolicy", "STORED", "DONE", "REFUSED", "StoreRefusedRecord"]

STORED = "stored"  # the run wrote a new outcome to the store
DONE = "done"  # answered otherwise (a dedup hit, a 4xx, refused at home)
REFUSED = "refused"  # the store refused it (503)

T = TypeVar("T")


class StoreRefusedRecord(Exception):
    """The dedup store answers pings but fails every write of one replayed record."""


class PoisonPolicy(Generic[T]):
    """One replay's poison-record policy (see the module docstring).

    ``store_answers()``: does the store answer a ping now. ``on_poison(item, error)``:
    the caller quarantines ``item``. Counts: ``poisoned`` (records handed to
    ``on_poison``), ``wrote`` (the store stored some record of this replay)."""

    def __init__(self, store_answers: Callable[[], bool], on_poison: Callable[[T, BaseException], None],
                 refusals_are_poison: bool = True, what: str = "replay") -> None:
        self.what = what  # named in the outage's message ("WAL replay", "replay")
        self.store_answers = store_answers
        self.on_poison = on_poison
        self.refusals_are_poison = refusals_are_poison
        self.wrote = False
        self.poisoned = 0
        self.refused: list[tuple[T, StoreUnavailable | None]] = []  # and the refusal, when one was raised
        self._refusal: StoreUnavailable | None = None

    def run(self, items: Sequence[T], run_batch: Callable[[Sequence[T]], Sequence[str]],
            run_one: Callable[[T], str]) -> list[str]:
        """Run ``items`` as one batch (``run_batch``: one of STORED/DONE/REFUSED per item);
        if it raises unexpectedly, one by one (``run_one``). Returns each item's result
        (``"poison"`` for the ones handed to ``on_poison``)."""
        try:
            results = list(run_batch(items))
        except StoreUnavailable:
            if not self.refusals_are_poison:
                raise
            results = None
        except Exception:  # noqa: BLE001 -- a poison record among them: one by one
            results = None
        if results is None:
            results = []
            for item in items:
                results.append(self._one(item, run_one))
                self._note(item, results[-1])
        else:
            for item, result in zip(items, results, strict=True):
                if result != DONE:  # _note of DONE notes nothing: a replay's common answer
                    self._note(item, result)
        return results

    def _one(self, item: T, run_one: Callable[[T], str]) -> str:
        try:
            return run_one(item)
        except StoreUnavailable as exc:
            if not self.refusals_are_poison:
                raise
            self._refusal = exc
            return REFUSED
        except Exception as exc:  # noqa: BLE001 -- a poison record: quarantined, replay continues
            self.poisoned += 1
            self.on_poison(item, exc)
            return "poison"

    def _note(self, item: T, result: str) -> None:
        if result == REFUSED:
            if not self.refusals_are_poison or not self.store_answers():
                raise StoreUnavailable(f"dedup store unavailable during {self.what}")
            self.refused.append((item, self._refusal))
            self._refusal = None
        elif result == STORED:
            self.wrote = True

    def finish(self, run_one: Callable[[T], str]) -> int:
        """Try each refused record once more; one still refused is poison if the store
        stored other records of this replay, else the store is what is broken
        (:class:`StoreUnavailable`). Returns ``poisoned`` (every record quarantined)."""
        refused, self.refused = self.refused, []
        again: list[tuple[T, StoreUnavailable | None]] = []
        for item, _ in refused:
            self._refusal = None
            result = self._one(item, run_one)
            if result == REFUSED:
                if not self.store_answers():
                    raise StoreUnavailable(f"dedup store unavailable during {self.what}")
                again.append((item, self._refusal))
            elif result == STORED:
                self.wrote = True
        if again and not self.wrote:
            raise again[0][1] or StoreUnavailable(f"dedup store unavailable during {self.what} (it answers pings "
                                                  "but stored no record)")
        for item, refusal in again:
            self.poisoned += 1
            self.on_poison(item, refusal or StoreRefusedRecord(
                "the dedup store refused this record twice while it stored others"))
        return self.poisoned


def answered(status: int, replayed: bool) -> str:
    """The policy's result of a replayed record answered ``status`` (``replayed``: the
    answer came from the store, ``Idempotent-Replayed``)."""
    if status == 503:
        return REFUSED
    return STORED if status in (200, 202) and not replayed else DONE
