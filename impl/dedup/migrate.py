"""Zero-downtime dedup shard migration: old ring -> new ring (SPEC 13.4).

Why this module exists: moving dedup keys between shards is exactly where
first-write-wins breaks in practice -- a key read from the wrong shard looks
absent and a duplicate is stored with a second outcome. The migration keeps
one *decider* per phase (the ring whose ``put_if_absent`` decides first-write)
and mirrors every write to the other ring, so both rings always hold the
decider's outcome; a phase change that moves the decider waits until no
operation is in flight (:class:`DualWriteStore` barrier).

Phase machine (``flk dedup-migrate``; the state lives in a JSON file):

====================  ==========  =============  ====================================
phase                 decider     mirror to      reads from
====================  ==========  =============  ====================================
``planned``           old         --             old
``dual_write``        old         new            old
``copied``            old         new            old   (copy finished: every old key is in new)
``verified``          old         new            old   (verify found no missing/different key)
``cut_over``          new         old            new   (catch-up: every old key is in new)
``cleaned``           new         --             new   (old ring no longer written; then the prune)
``rolled_back``       old         --             old
====================  ==========  =============  ====================================

Allowed transitions: planned -> dual_write -> copied -> verified -> cut_over ->
cleaned; rollback to ``rolled_back`` from dual_write, copied or verified (the
other ring held every write as a mirror, so nothing is lost). A cutover is
undone through ``verified`` (cut_over -> verified -> rolled_back): verified
keeps both rings mirrored while the old ring decides again, so no server
decides on the new ring while another has already stopped mirroring to it
(INV-OP-ONE-DECIDER); cut_over -> rolled_back is refused. The operator and
``flk dedup-migrate rollback`` both take that path (the CLI waits
:data:`ROLLBACK_SETTLE_S` in verified: every server re-reads the state file
within ``refresh_s``). ``copy`` runs in
dual_write (a write during the copy is mirrored by the store) and may be run
again in copied; ``verify`` runs in copied and is the safety net for a write
that a process made before it saw dual_write: cut_over needs a clean verify.

Catch-up before cleanup (:func:`catchup_step`): verify reads each key once, so a
process that dies between deciding a key on the old ring and writing its copy to
the new ring, after verify has scanned that key, leaves the key on the old ring
only. In cut_over the dual read still finds it; after cleanup nothing reads the
old ring and the key's retry would be decided a second time (INV-FWW). So
cut_over -> cleaned is refused until a catch-up pass -- a scan of the whole old
ring begun at least :data:`CATCHUP_SETTLE_S` after the cutover (every server has
re-read cut_over, so none decides on the old ring any more), copying every live
entry the new ring lacks -- has finished with no differing entry. Entering
cut_over (again) resets it.

Prune after cleanup (:func:`prune_step`): a moved key's old copy stays in the shard
that owned it before, unread, until it expires (``DEDUP_TTL_S``, 14 days by default);
meanwhile that shard's count counts it, so the region's key count is inflated by
every moved key and a geo-divergence check between regions reads it as missing
replication. The prune, begun at least :data:`CATCHUP_SETTLE_S` after the cleanup
(every server has stopped mirroring to the old ring), walks the new ring's shards
and deletes each copy of a key another shard owns once the owner holds the very same
outcome (compare-and-delete); a copy whose owner lacks it or holds another outcome
is kept and counted. It changes no answer: nothing reads a shard for a key it does
not own.

Everything here is driven with ``now`` passed in; the CLI owns the clock, the
QPS throttle and the state file.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from ..core import textdata
from ..core.schema import Engine, Field, SchemaError
from .base import (
    DEFAULT_TTL_S,
    BatchMixin,
    DedupStore,
    StoredOutcome,
    StoreUnavailable,
    check_key,
    item_by_item,
    iter_entries,
)
from .sharded import DEFAULT_PROBES, DEFAULT_VNODES, Ring, ShardedStore, check_shard_name

PHASES = ("planned", "dual_write", "copied", "verified", "cut_over", "cleaned", "rolled_back")
TRANSITIONS = {
    "dual_write": ("planned",),
    "copied": ("dual_write",),
    "verified": ("copied", "cut_over"),
    "cut_over": ("verified",),
    "cleaned": ("cut_over",),
    "rolled_back": ("dual_write", "copied", "verified"),
}
ROLLBACK_SETTLE_S = 2.0  # > 2 x DualWriteStore's default refresh_s: every server has re-read verified
CATCHUP_SETTLE_S = ROLLBACK_SETTLE_S  # cut_over to the catch-up's first batch: every server has re-read cut_over
DECIDER = {"planned": "old", "dual_write": "old", "copied": "old", "verified": "old", "cut_over": "new",
           "cleaned": "new", "rolled_back": "old"}
MIRROR = {"dual_write": True, "copied": True, "verified": True, "cut_over": True}
STATE_VERSION = 1


class MigrationError(Exception):
    """A refused step (bad transition, bad plan, bad state file): the CLI's exit 2."""


class MigrationConflict(StoreUnavailable):
    """The two rings hold different outcomes for one key (never expected: it
    means a writer bypassed the migration). The request fails closed."""


# -- state ------------------------------------------------------------------------


@dataclass
class RingSpec:
    shards: dict[str, str]  # name -> store URL
    vnodes: int = DEFAULT_VNODES
    probes: int = DEFAULT_PROBES

    def ring(self) -> Ring:
        return Ring(self.shards, self.vnodes, self.probes)

    def to_json(self) -> dict:
        return {"shards": dict(sorted(self.shards.items())), "vnodes": self.vnodes, "probes": self.probes}

    @classmethod
    def from_json(cls, doc: Mapping) -> RingSpec:
        return cls(dict(doc["shards"]), int(doc["vnodes"]), int(doc["probes"]))


def new_state(old: RingSpec, new: RingSpec, now: float) -> dict:
    for spec in (old, new):
        if not spec.shards:
            raise MigrationError("a ring needs at least one shard")
        for n in spec.shards:
            try:
                check_shard_name(n)
            except ValueError as exc:
                raise MigrationError(str(exc)) from None
        try:
            spec.ring()
        except ValueError as exc:
            raise MigrationError(str(exc)) from None
    for n in set(old.shards) & set(new.shards):
        if old.shards[n] != new.shards[n]:
            raise MigrationError(f"shard {n!r} has different URLs in the old and new ring")
    if old.to_json() == new.to_json():
        raise MigrationError("the old and new ring are the same")
    return {"version": STATE_VERSION, "phase": "planned", "old": old.to_json(), "new": new.to_json(),
            "copy": {"shard": 0, "cursor": None, "scanned": 0, "copied": 0, "present": 0, "conflicts": 0,
                     "done": False},
            "verify": {"shard": 0, "cursor": None, "checked": 0, "missing": 0, "different": 0, "done": False,
                       "examples": []},
            "catchup": new_catchup(None),
            "prune": new_prune(None),
            "history": [{"phase": "planned", "at": now}]}


def new_catchup(after: float | None) -> dict:
    """Fresh catch-up progress for a cutover made at ``after`` (None: no cutover yet)."""
    return {"after": after, "started_at": None, "shard": 0, "cursor": None, "scanned": 0, "copied": 0,
            "present": 0, "different": 0, "done": False, "examples": []}


def new_prune(after: float | None) -> dict:
    """Fresh prune progress for a cleanup made at ``after`` (None: not cleaned yet)."""
    return {"after": after, "started_at": None, "shard": 0, "cursor": None, "scanned": 0, "deleted": 0,
            "missing": 0, "different": 0, "done": False, "examples": []}


def _count(name: str) -> Field:
    return Field(name, "int", None, "a count", minimum=0, required=True)


_PROGRESS = (Field("shard", "int", None, "the shard being walked", minimum=0, required=True),
             Field("cursor", "str", None, "where the walk resumes (null: the shard's start)"),
             Field("done", "bool", None, "walk finished", required=True),
             Field("examples", "list", None, "a few findings"))
# the progress tables and the history the steps read and write (other keys pass: a later version's)
STATE_FIELDS = (
    Field("copy", "table", None, "copy progress", required=True,
          fields=(*_PROGRESS, *map(_count, ("scanned", "copied", "present", "conflicts")))),
    Field("verify", "table", None, "verify progress", required=True,
          fields=(*_PROGRESS, *map(_count, ("checked", "missing", "different")), Field("suspects", "list", None, "keys"))),
    Field("catchup", "table", None, "catch-up progress", required=True,
          fields=(*_PROGRESS, *map(_count, ("scanned", "copied", "present", "different")),
                  Field("after", "number", None, "the cutover's time"), Field("started_at", "number", None, "when"))),
    Field("prune", "table", None, "prune progress", required=True,
          fields=(*_PROGRESS, *map(_count, ("scanned", "deleted", "missing", "different")),
                  Field("after", "number", None, "the cleanup's time"), Field("started_at", "number", None, "when"))),
    Field("history", "tables", None, "the phases entered", required=True,
          fields=(Field("phase", "str", None, "the phase entered", choices=PHASES, required=True),
                  Field("at", "number", None, "when", required=True))),
)
_STATE = Engine(error=SchemaError, others_pass=True)


def check_state_tables(doc: dict) -> None:
    """The progress tables and the history of a migration state are of the shape the steps use
    (:class:`SchemaError` naming the key otherwise)."""
    _STATE.check_table(doc, STATE_FIELDS, "")


def _why_unreadable(exc: Exception) -> str:
    """The cause of a state file that cannot be read or parsed, with its position."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 (byte {exc.start})"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


def load_state(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            doc = textdata.json_loads(f.read())
    except FileNotFoundError:
        raise MigrationError(f"no migration state at {path} (run `flk dedup-migrate plan` first)") from None
    except (OSError, ValueError) as exc:
        raise MigrationError(f"unreadable migration state {path}: {_why_unreadable(exc)}") from None
    if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION or doc.get("phase") not in PHASES:
        raise MigrationError(f"{path} is not a version-{STATE_VERSION} migration state")
    try:
        RingSpec.from_json(doc["old"]).ring()
        RingSpec.from_json(doc["new"]).ring()
    except (KeyError, TypeError, ValueError):
        raise MigrationError(f"{path}: bad ring description") from None
    if not isinstance(doc.get("catchup"), dict):  # a state written before the catch-up existed
        cut = [h.get("at") for h in doc.get("history", []) if isinstance(h, dict) and h.get("phase") == "cut_over"]
        doc["catchup"] = new_catchup(cut[-1] if cut and doc["phase"] == "cut_over" else None)
    if not isinstance(doc.get("prune"), dict):  # a state written before the prune existed
        done = [h.get("at") for h in doc.get("history", []) if isinstance(h, dict) and h.get("phase") == "cleaned"]
        doc["prune"] = new_prune(done[-1] if done and doc["phase"] == "cleaned" else None)
    try:
        check_state_tables(doc)
    except SchemaError as exc:
        raise MigrationError(f"{path}: not a usable migration state: {exc}") from None
    return doc


def save_state(path: str, state: Mapping) -> None:
    """Atomic: temp file, fsync, rename, fsync the directory."""
    d = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp"
    data = json.dumps(state, indent=1, sort_keys=True).encode()
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # name the state file the caller gave, not the temp file
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise type(exc)(exc.errno, exc.strerror, path) from None
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def transition(state: dict, to: str, now: float) -> dict:
    """Move ``state`` to phase ``to`` (raises :class:`MigrationError` if not allowed)."""
    cur = state["phase"]
    if to not in TRANSITIONS or cur not in TRANSITIONS[to]:
        hint = " (undo a cutover through verified first)" if (cur, to) == ("cut_over", "rolled_back") else ""
        raise MigrationError(f"cannot go from {cur} to {to} (allowed from: {', '.join(TRANSITIONS.get(to, ()))})"
                             + hint)
    if to == "copied" and not state["copy"]["done"]:
        raise MigrationError("copy has not finished")
    if to == "verified" and not (state["verify"]["done"] and state["verify"]["missing"] == 0
                                 and state["verify"]["different"] == 0 and not state["verify"].get("suspects")):
        raise MigrationError("verify has not finished clean")
    if to == "cleaned":
        c = state.get("catchup") or {}
        if not c.get("done"):
            raise MigrationError("the catch-up has not finished (run `flk dedup-migrate catchup` first: keys a "
                                 "process decided on the old ring without copying them after verify)")
        if c.get("different"):
            raise MigrationError(f"the catch-up found {c['different']} key(s) with different outcomes in the two rings")
    if to == "cut_over":
        state["catchup"] = new_catchup(now)
    if to == "cleaned":
        state["prune"] = new_prune(now)
    state["phase"] = to
    state["history"].append({"phase": to, "at": now})
    return state


def rollback_path(phase: str) -> list[str]:
    """The phases a rollback from ``phase`` passes through, in order (``[]``: nothing to undo).
    From cut_over it goes through verified first (INV-OP-ONE-DECIDER)."""
    if phase == "cut_over":
        return ["verified", "rolled_back"]
    if phase in TRANSITIONS["rolled_back"]:
        return ["rolled_back"]
    raise MigrationError(f"cannot roll back from {phase} (allowed from: cut_over, "
                         f"{', '.join(TRANSITIONS['rolled_back'])})")


# -- stores ----------------------------------------------------------------------------


def open_rings(state: Mapping, opener=None) -> tuple[ShardedStore, ShardedStore]:
    """The old and new :class:`ShardedStore` over one shared set of shard stores
    (a shard in both rings is one store object)."""
    if opener is None:
        from . import open_store as opener
    old, new = RingSpec.from_json(state["old"]), RingSpec.from_json(state["new"])
    urls = {**old.shards, **new.shards}
    pool: dict[str, DedupStore] = {}
    try:
        for name in sorted(urls):
            pool[name] = opener(urls[name])
    except BaseException:
        for s in pool.values():
            s.close()
        raise
    return (ShardedStore({n: pool[n] for n in old.shards}, ring=old.ring()),
            ShardedStore({n: pool[n] for n in new.shards}, ring=new.ring()))


class _Barrier:
    """Many operations at once, or one phase change with none in flight."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._active = 0
        self._changing = False

    def enter(self) -> None:
        with self._cv:
            while self._changing:
                self._cv.wait()
            self._active += 1

    def leave(self) -> None:
        with self._cv:
            self._active -= 1
            if self._active == 0:
                self._cv.notify_all()

    def change(self, fn) -> None:
        with self._cv:
            while self._changing:
                self._cv.wait()
            self._changing = True
            while self._active:
                self._cv.wait()
            try:
                fn()
            finally:
                self._changing = False
                self._cv.notify_all()


class DualWriteStore(BatchMixin):
    """The dedup store a server uses during a migration (see the phase table).

    ``put_if_absent``: the decider ring decides; its winner is then written to
    the mirror ring with ``put_if_absent`` (a different outcome already there
    raises :class:`MigrationConflict`; an unreachable mirror raises
    ``StoreUnavailable``: a write that is not in both rings is never
    acknowledged while both rings matter). ``refresh(now)`` re-reads the state
    file at most every ``refresh_s`` and applies a phase change behind the
    barrier (no operation in flight in this process).
    """

    kind = "dual-write"

    def __init__(self, old: DedupStore, new: DedupStore, phase: str = "planned", *,
                 state_path: str | None = None, refresh_s: float = 0.5,
                 ttl_s: float = DEFAULT_TTL_S) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        self.old, self.new = old, new
        self.phase = phase
        self.state_path = state_path
        self.refresh_s = float(refresh_s)
        self.ttl_s = ttl_s
        self._checked: float | None = None
        self._barrier = _Barrier()
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()  # one state-file reader at a time: reads apply in file order
        self.stats = {"mirrored": 0, "conflicts": 0, "phase_changes": 0}
        self.phases = [phase]  # every phase this store has applied, in order
        self.pruned = False  # the prune has walked every shard (the state file's prune.done)

    @classmethod
    def from_state(cls, path: str, now: float, opener=None, **kw) -> DualWriteStore:
        state = load_state(path)
        old, new = open_rings(state, opener)
        s = cls(old, new, state["phase"], state_path=path, **kw)
        s.pruned = bool(state["prune"]["done"])
        s._checked = now
        return s

    @property
    def count_exact(self) -> bool:
        """False while :meth:`count` includes copies the migration left in the moved keys' old
        shards: from the cutover (the new ring decides and counts its shards, those copies among
        them) until the prune has walked every shard. Geo divergence then compares samples only
        (:mod:`flk.impl.replication.divergence`)."""
        return self.phase not in ("cut_over", "cleaned") or (self.phase == "cleaned" and self.pruned)

    def set_phase(self, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")

        def apply() -> None:
            if phase != self.phase:
                self.phase = phase
                self.phases.append(phase)
                self.stats["phase_changes"] += 1
        self._barrier.change(apply)

    def refresh(self, now: float) -> None:
        if self.state_path is None:
            return
        with self._lock:
            if self._checked is not None and now - self._checked < self.refresh_s:
                return
            self._checked = now
        # Two readers may not overlap: a slow read of an older file would otherwise apply its
        # phase after a newer read's (cleaned -> cut_over again). A thread that finds a read in
        # progress keeps the current phase, as it would have between two refresh periods.
        if not self._refreshing.acquire(blocking=False):
            return
        try:
            try:
                state = load_state(self.state_path)
            except MigrationError:
                return  # keep the last known phase; the CLI reports a bad file
            phase = state["phase"]
            self.pruned = bool(state["prune"]["done"])
            if phase != self.phase:
                self.set_phase(phase)
        finally:
            self._refreshing.release()

    def decider(self) -> DedupStore:
        """The ring that decides first-write in the current phase (the ops endpoints show it)."""
        return self._rings()[0]

    def _rings(self) -> tuple[DedupStore, DedupStore | None]:
        dec = self.old if DECIDER[self.phase] == "old" else self.new
        other = self.new if dec is self.old else self.old
        return dec, (other if MIRROR.get(self.phase) else None)

    def _op(self, now: float, fn):
        self.refresh(now)
        self._barrier.enter()
        try:
            return fn(*self._rings())
        finally:
            self._barrier.leave()

    def _mirror_may_hold_first_writes(self) -> bool:
        """True when the mirror ring holds outcomes it decided itself: the old ring while the
        new one decides (cut_over), or the new ring once this store has seen a cutover
        (verified after a cutover is undone). Otherwise an entry only the mirror holds is
        stale data (a writer that bypassed the migration) and is never adopted."""
        return DECIDER[self.phase] == "new" or "cut_over" in self.phases

    def get_many(self, keys, now):
        return item_by_item(keys, lambda key: self.get(key[0], key[1], now), *self._batch_rule())

    def put_many_if_absent(self, items, now, ttl_s=None):
        return item_by_item(items, lambda item: self.put_if_absent(item[0], item[1], item[2], now, ttl_s),
                            *self._batch_rule())

    def _batch_rule(self) -> tuple:
        """How a batch is answered: the per-item calls in order (a later item sees an earlier
        item's write). Over two sharded rings an item that fails fails alone (SPEC 13.1): a down
        shard is kept out by its ring's health at no cost, so going on costs at most one failed
        call per shard; the batch is a plain failure only when every item failed and no shard of
        either ring is up. Over other rings the first failure fails the batch (each further item
        could cost a store timeout). ``(alone, store_up)`` for :func:`item_by_item`."""
        rings = (self.old, self.new)
        if not all(isinstance(ring, ShardedStore) for ring in rings):
            return (), lambda: True  # nothing fails alone: store_up is never asked
        return StoreUnavailable, lambda: any(h.up for ring in rings for h in ring.health.values())

    def get(self, tenant: str, pcs_id: str, now: float) -> StoredOutcome | None:
        """The decider's entry; on a miss, the mirror ring's where it may hold a first write
        the decider lacks (dual read; see :meth:`put_if_absent`)."""
        def run(dec, mirror):
            held = dec.get(tenant, pcs_id, now)
            if (held is None and mirror is not None and self._mirror_may_hold_first_writes()
                    and not _same_store(dec, mirror, tenant, pcs_id)):
                held = mirror.get(tenant, pcs_id, now)
            return held
        return self._op(now, run)

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        """Dual read, then decide, then mirror. While both rings matter the mirror ring is
        read before the decider decides:

        * a mirror shard that is down fails the put *before* anything is decided. Deciding
          first left the winner in the decider only (the put answered 503); when that was
          the old ring after verify had passed the key, the new ring decided the key's retry
          a second time after cutover (INV-FWW, INV-NO-ACKED-LOSS);
        * a winner the mirror holds and the decider lacks, where the mirror may hold first
          writes (:meth:`_mirror_may_hold_first_writes`: the old ring in cut_over), is the
          key's first write -- its mirror write was lost (the shard lost between the two
          calls, the process dead between them) -- and the decider adopts it;
        * anything else the mirror holds must equal the decider's winner
          (:class:`MigrationConflict` otherwise: fail closed).
        """
        check_key(tenant, pcs_id)

        def run(dec, mirror):
            two = mirror is not None and not _same_store(dec, mirror, tenant, pcs_id)
            held = mirror.get(tenant, pcs_id, now) if two else None
            if held is not None and self._mirror_may_hold_first_writes():
                ttl = _remaining(held, now, self.ttl_s)
                if ttl > 0:  # (an entry past its life by the TTL rule is not copied: copy_step's rule)
                    _, winner = dec.put_if_absent(tenant, pcs_id, held, now, ttl)
                    if winner != held:
                        self.stats["conflicts"] += 1
                        raise MigrationConflict("the two rings hold different outcomes for one key")
                    return False, winner
            won, winner = dec.put_if_absent(tenant, pcs_id, outcome, now, ttl_s)
            if two:
                ttl = (self.ttl_s if ttl_s is None else ttl_s) if won else _remaining(winner, now, self.ttl_s)
                if held is not None or ttl > 0:
                    there = held if held is not None else mirror.put_if_absent(tenant, pcs_id, winner, now, ttl)[1]
                    if there != winner:
                        self.stats["conflicts"] += 1
                        raise MigrationConflict("the two rings hold different outcomes for one key")
                    self.stats["mirrored"] += 1
            return won, winner
        return self._op(now, run)

    def count(self, now):
        return self._op(now, lambda dec, _m: dec.count(now))

    def scan(self, cursor, limit, now):
        return self._op(now, lambda dec, _m: dec.scan(cursor, limit, now))

    def sample(self, n, seed, now):
        return self._op(now, lambda dec, _m: dec.sample(n, seed, now))

    def every_copy(self, now: float) -> list:
        """The deciding ring's :meth:`ShardedStore.every_copy <flk.impl.dedup.sharded.ShardedStore.every_copy>`
        (a single store's entries when that ring is one store)."""
        return self._op(now, lambda dec, _m: dec.every_copy(now) if hasattr(dec, "every_copy")
                        else list(iter_entries(dec, now)))

    def ping(self) -> bool:
        dec, mirror = self._rings()
        return bool(dec.ping()) and (mirror is None or bool(mirror.ping()))

    def close(self) -> None:
        seen: set[int] = set()
        for ring in (self.old, self.new):
            for s in getattr(ring, "shards", {"_": ring}).values():
                if id(s) not in seen:
                    seen.add(id(s))
                    s.close()


def _same_store(a, b, tenant: str, pcs_id: str) -> bool:
    """True when both rings route the key to the very same shard store (nothing to mirror)."""
    if isinstance(a, ShardedStore) and isinstance(b, ShardedStore):
        return a.shards[a.shard_for(tenant, pcs_id)] is b.shards[b.shard_for(tenant, pcs_id)]
    return a is b


def _remaining(o: StoredOutcome, now: float, ttl_s: float) -> float:
    """TTL for a copy of an entry: its life left, assuming it was stored at
    ``first_seen`` with the store's TTL (the contract does not expose expiry)."""
    return o.first_seen + ttl_s - now


# -- copy and verify (resumable, bounded batches) ----------------------------------------


def _copy_entry(dest, tenant: str, pcs_id: str, o: StoredOutcome, now: float, ttl_s: float) -> str | None:
    """Put an old-ring entry into its new owner ``dest`` with its remaining life: ``copied``,
    ``present`` (the same outcome was there), ``different`` (another outcome was), or None
    (the entry has no life left; nothing written). Copy and catch-up both copy through it."""
    ttl = _remaining(o, now, ttl_s)
    if ttl <= 0:
        return None
    won, there = dest.put_if_absent(tenant, pcs_id, o, now, ttl)
    return "copied" if won else "present" if there == o else "different"


def _next_page(ring: ShardedStore, prog: dict, batch: int, now: float):
    names = list(ring.shards)
    if prog["shard"] >= len(names):
        return None, None
    name = names[prog["shard"]]
    page, nxt = ring.shards[name].scan(prog["cursor"], batch, now)
    return (name, page), nxt


def _advance(prog: dict, nxt, n_shards: int) -> None:
    if nxt is None:
        prog["shard"] += 1
        prog["cursor"] = None
        prog["done"] = prog["shard"] >= n_shards
    else:
        prog["cursor"] = nxt


def copy_step(state: dict, old: ShardedStore, new: ShardedStore, now: float, batch_size: int = 500,
              dry_run: bool = False, ttl_s: float = DEFAULT_TTL_S) -> dict:
    """Copy one batch of the old ring's entries whose owner changes into their new
    owner (``put_if_absent`` with the entry's remaining life). Advances
    ``state["copy"]`` (the checkpoint; with ``dry_run`` nothing is written and the
    caller keeps ``state`` to itself). Returns this batch's counts."""
    if state["phase"] not in ("dual_write", "copied"):
        raise MigrationError(f"copy runs in phase dual_write (or copied, to copy again), not {state['phase']}")
    prog = dict(state["copy"])
    got, nxt = _next_page(old, prog, batch_size, now)
    out = {"scanned": 0, "copied": 0, "present": 0, "conflicts": 0, "moving": 0}
    if got is None:
        return out
    name, page = got
    for t, p, o in page:
        out["scanned"] += 1
        dest = new.shard_for(t, p)
        if new.shards[dest] is old.shards[name]:
            continue
        out["moving"] += 1
        if dry_run:
            continue
        kind = _copy_entry(new.shards[dest], t, p, o, now, ttl_s)
        if kind is not None:
            out["conflicts" if kind == "different" else kind] += 1
    for k in ("scanned", "copied", "present", "conflicts"):
        prog[k] += out[k]
    _advance(prog, nxt, len(old.shards))
    state["copy"] = prog
    return out


def verify_step(state: dict, old: ShardedStore, new: ShardedStore, now: float, batch_size: int = 500) -> dict:
    """Check one batch: every live old-ring entry is in the new ring with the
    same outcome (``get`` through the new ring's routing)."""
    if state["phase"] != "copied":
        raise MigrationError(f"verify runs after copy (phase copied), not in {state['phase']}")
    prog = state["verify"]
    got, nxt = _next_page(old, prog, batch_size, now)
    out = {"checked": 0, "missing": 0, "different": 0}
    if got is None:
        return out
    _, page = got
    keys = [(t, p) for t, p, _ in page]
    there = new.get_many(keys, now)
    for (t, p, o), n in zip(page, there, strict=True):
        out["checked"] += 1
        if n is None:
            # maybe a write in flight (decided on old, mirror not yet done): the
            # driver re-checks suspects after a settle time (settle_suspects)
            prog.setdefault("suspects", []).append([t, p])
        elif n != o:
            out["different"] += 1
            if len(prog["examples"]) < 5:
                prog["examples"].append({"kind": "different", "shard": new.shard_for(t, p)})
    for k in ("checked", "missing", "different"):
        prog[k] += out[k]
    _advance(prog, nxt, len(old.shards))
    return out


def settle_suspects(state: dict, old: ShardedStore, new: ShardedStore, now: float) -> dict:
    """Re-check the keys verify found missing from the new ring (call it after
    longer than a request takes): still missing while live in the old ring
    counts as missing."""
    prog = state["verify"]
    out = {"suspects": 0, "missing": 0, "different": 0}
    for t, p in prog.get("suspects", []):
        out["suspects"] += 1
        o = old.get(t, p, now)
        if o is None:
            continue  # expired meanwhile
        n = new.get(t, p, now)
        kind = "missing" if n is None else ("different" if n != o else None)
        if kind:
            out[kind] += 1
            prog[kind] += 1
            if len(prog["examples"]) < 5:
                prog["examples"].append({"kind": kind, "shard": new.shard_for(t, p)})
    prog["suspects"] = []
    return out


def _pass_start(state: dict, key: str, phase: str, now: float, settle_s: float) -> tuple[dict, dict | None]:
    """The progress ``state[key]`` of a pass that runs in ``phase`` only (MigrationError otherwise)
    and starts ``settle_s`` after the phase change at its ``after`` (now, when unknown), with
    ``{"settling": True, "wait_s": ...}`` before then, else None (the start recorded in
    ``started_at``). The catch-up and the prune begin through it."""
    if state["phase"] != phase:
        what = "catch-up" if key == "catchup" else key
        raise MigrationError(f"{what} runs in phase {phase}, not {state['phase']}")
    prog = state[key]
    if prog["started_at"] is None:
        after = prog["after"] if prog["after"] is not None else now
        prog["after"] = after
        if now < after + settle_s:
            return prog, {"settling": True, "wait_s": round(after + settle_s - now, 3)}
        prog["started_at"] = now
    return prog, None


def catchup_step(state: dict, old: ShardedStore, new: ShardedStore, now: float, batch_size: int = 500,
                 settle_s: float = CATCHUP_SETTLE_S, ttl_s: float = DEFAULT_TTL_S) -> dict:
    """One batch of the catch-up (phase cut_over): scan the old ring and copy every live entry
    whose new owner is another store and lacks it (``put_if_absent``, the remaining life);
    an entry the new ring holds with another outcome counts as ``different`` (cleanup is then
    refused). The first batch waits until ``settle_s`` after the cutover (``{"settling": True,
    "wait_s": ...}`` before): by then no server decides on the old ring, so nothing written
    there later is missing from the new ring. Advances ``state["catchup"]``."""
    prog, waiting = _pass_start(state, "catchup", "cut_over", now, settle_s)
    if waiting is not None:
        return waiting
    out = {"scanned": 0, "copied": 0, "present": 0, "different": 0}
    got, nxt = _next_page(old, prog, batch_size, now)
    if got is None:
        return out
    name, page = got
    moving = [(t, p, o, dest) for t, p, o in page
              if new.shards[dest := new.shard_for(t, p)] is not old.shards[name]]
    out["scanned"] = len(page)
    there = new.get_many([(t, p) for t, p, _, _ in moving], now) if moving else []
    for (t, p, o, dest), n in zip(moving, there, strict=True):
        # read first: an entry the new ring already holds costs no write
        kind = _copy_entry(new.shards[dest], t, p, o, now, ttl_s) if n is None else \
            "present" if n == o else "different"
        if kind is None:
            continue
        out[kind] += 1
        if kind == "different" and len(prog["examples"]) < 5:
            prog["examples"].append({"kind": "different", "shard": dest})
    for k in ("scanned", "copied", "present", "different"):
        prog[k] += out[k]
    _advance(prog, nxt, len(old.shards))
    return out


def prune_step(state: dict, new: ShardedStore, now: float, batch_size: int = 500,
               settle_s: float = CATCHUP_SETTLE_S) -> dict:
    """One batch of the prune (phase cleaned): scan the new ring's shards and delete each live
    entry a shard holds for a key another shard owns -- the copy a migration left behind, which
    no server reads any more but the shard's count still counts -- once its owner holds the very
    same outcome (compare-and-delete, ``delete_copies``). A copy whose owner lacks the key counts
    as ``missing``, one whose owner holds another outcome as ``different``; both are kept (the
    evidence, and nothing that could be the only copy is ever deleted). The first batch waits
    until ``settle_s`` after the cleanup (``{"settling": True, "wait_s": ...}`` before): by then
    no server mirrors to the old ring, so no copy is written behind the scan. Advances
    ``state["prune"]``; shards only the old ring had are not touched (nothing reads them)."""
    prog, waiting = _pass_start(state, "prune", "cleaned", now, settle_s)
    if waiting is not None:
        return waiting
    out = {"scanned": 0, "deleted": 0, "missing": 0, "different": 0}
    got, nxt = _next_page(new, prog, batch_size, now)
    if got is None:
        return out
    name, page = got
    here = new.shards[name]
    copies = [(t, p, o, owner) for t, p, o in page if new.shards[owner := new.shard_for(t, p)] is not here]
    out["scanned"] = len(page)
    held = new.get_many([(t, p) for t, p, _, _ in copies], now) if copies else []
    same, found = [], []
    for (t, p, o, owner), n in zip(copies, held, strict=True):
        if n == o:
            same.append((t, p, o))
        else:
            found.append({"kind": "missing" if n is None else "different", "shard": name, "owner": owner})
    out["deleted"] = here.delete_copies(same, now) if same else 0
    for f in found:  # recorded once the batch went through (a retried batch counts them once)
        out[f["kind"]] += 1
        if len(prog["examples"]) < 5:
            prog["examples"].append(f)
    for k in ("scanned", "deleted", "missing", "different"):
        prog[k] += out[k]
    _advance(prog, nxt, len(new.shards))
    return out


def reset_verify(state: dict) -> None:
    state["verify"] = {"shard": 0, "cursor": None, "checked": 0, "missing": 0, "different": 0, "done": False,
                       "examples": []}


def plan_summary(state: Mapping, sample_keys: int = 100_000, seed: int = 1) -> dict:
    """The expected fraction of keys that change owner (random keys through both rings)."""
    import random

    import numpy as np

    old, new = RingSpec.from_json(state["old"]).ring(), RingSpec.from_json(state["new"]).ring()
    rng = random.Random(seed)
    probes = np.frombuffer(rng.randbytes(16 * sample_keys), dtype=">u4").reshape(-1, 4)
    a = [old.shards[i] for i in old.owner_indexes(probes)]
    b = [new.shards[i] for i in new.owner_indexes(probes)]
    moved = sum(x != y for x, y in zip(a, b, strict=True))
    flows: dict[str, int] = {}
    for x, y in zip(a, b, strict=True):
        if x != y:
            flows[f"{x}->{y}"] = flows.get(f"{x}->{y}", 0) + 1
    return {"old_shards": list(old.shards), "new_shards": list(new.shards),
            "added": sorted(set(new.shards) - set(old.shards)), "removed": sorted(set(old.shards) - set(new.shards)),
            "expected_moved_fraction": round(moved / sample_keys, 4),
            "flows": {k: round(v / sample_keys, 4) for k, v in sorted(flows.items())}}
