"""The replication protocol as a finite transition system, for exhaustive model checking.

Why this module exists: :mod:`flk.model.region` and :mod:`flk.model.cluster`
state the protocol as mutable objects with an unbounded history, which is the
right shape for Hypothesis traces and refinement tests but cannot be explored
exhaustively (every history is a different state). This module is the *same*
protocol -- the same transitions, guards and pipeline -- over immutable tuples
of small integers, bounded by a :class:`Scope`, so that
:mod:`flk.model.checker` can enumerate every reachable state.
``tests/formal/test_model_check.py`` runs random action sequences through both
formulations and asserts that the abstraction of the :class:`Cluster` equals
the state here after every step (the two cannot drift apart unnoticed).

Theory of operation
-------------------
* A submission is one entry of the global tuple ``subs`` in submission order;
  its index ``i`` is its request id *and* its receive time (``first_seen =
  i + 1``), so an outcome is just the index of the record that stored it and
  the reference merge (earliest ``(first_seen, region, digest)``) is the
  minimum index. A sub is ``(origin, key, digest, kind, gen)``: ``key =
  tenant * keys + pcs``, ``kind`` 0 = signed with the tenant's current key
  (generation ``gen``), 1 = forged, 2 = signed with another tenant's key.
* A region is ``(up, wal, buf, cursor, waiting, dedup, auth, wm, first, acked,
  answers, flags)``: the durable WAL and the unsynced buffer as tuples of sub
  indexes, the processing cursor, the local requests still waiting for an
  answer, per key the dedup outcome / authoritative outcome / first outcome
  ever stored (ghost) as sub index or -1, per peer the replication
  watermark, the acknowledged ``(rid, outcome)`` pairs and ``(rid, status)``
  answers (ghost), and ghost flags (bit 0: a dedup access for a record whose
  signature does not verify; bit 1: the planted reader's "stopped" latch).
* The cluster state is ``(subs, gens, regions, store, part, crashes,
  partitions, rotations)``: per tenant the key generation, per region the
  records it shipped to the object store and whether it is partitioned, and the
  fault budgets used.
* Key rotation adds a key to a tenant in every region at once and keeps the
  old ones valid (grace), as :meth:`flk.model.cluster.Cluster.rotate_key`
  does; so a good signature verifies everywhere and rotation changes only
  which key signs later submissions.
* Bugs are planted by name (:data:`PLANTED`); the checker must find each.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

from .merge import Outcome, merge_all

REGION_NAMES = ("eu", "us", "ap", "sa", "af", "me")
TENANT_NAMES = ("acme", "beta", "gamma", "delta")
KINDS = ("good", "forged", "other")

# region tuple fields
UP, WAL, BUF, CUR, WAIT, DEDUP, AUTH, WM, FIRST, ACKED, ANS, FLAGS = range(12)
F_UNVERIFIED_DEDUP = 1
F_READER_STOPPED = 2

PLANTED = {
    "merge-keeps-later": "the authoritative merge keeps the later first_seen instead of the earlier",
    "replay-skips-verify": "records replayed from a peer go to dedup without signature verification",
    "ship-before-sync": "the shipper uploads records still in the unsynced WAL buffer",
    "heal-forgets-region": "a healed region rejoins empty (re-bootstrapped), forgetting its own writes",
    "reader-never-resumes": "a region's reader stops at a partition and never resumes after heal",
}

# weak fairness is assumed for every instance of these action kinds
FAIR_KINDS = ("process", "ship", "replay", "heal", "restart")


@dataclass(frozen=True)
class Scope:
    """The bounds of one exhaustive exploration (all defaults: the quick tier)."""

    regions: int = 2
    tenants: int = 2
    keys: int = 1  # pcs_ids per tenant
    payloads: int = 2  # payload digests per pcs_id (2 = duplicates and conflicts)
    writes: int = 2  # submissions in total (of any kind: duplicates and conflicts are among them)
    bad: int = 1  # of which at most this many carry a bad signature (forged / another tenant's key)
    crashes: int = 1
    partitions: int = 1
    rotations: int = 0
    volatile_store: bool = False  # a crash loses the dedup map too (memory store)
    plant: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.regions <= len(REGION_NAMES):
            raise ValueError(f"regions must be 1..{len(REGION_NAMES)}")
        if not 1 <= self.tenants <= len(TENANT_NAMES):
            raise ValueError(f"tenants must be 1..{len(TENANT_NAMES)}")
        for name in ("keys", "payloads"):
            if not 1 <= getattr(self, name) <= 9:
                raise ValueError(f"{name} must be 1..9")
        for name in ("writes", "bad", "crashes", "partitions", "rotations"):
            if not 0 <= getattr(self, name) <= 9:
                raise ValueError(f"{name} must be 0..9")
        if self.plant is not None and self.plant not in PLANTED:
            raise ValueError(f"unknown planted bug {self.plant!r}; known: {', '.join(PLANTED)}")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Action:
    kind: str
    args: tuple = ()

    def label(self, m: Machine) -> str:
        a = self.args
        rn = m.region_name
        if self.kind == "submit":
            r, key, d, kind = a
            return f"submit {rn(r)} {m.key_name(key)} d{d + 1} {KINDS[kind]}"
        if self.kind == "replay":
            return f"replay {rn(a[0])}<-{rn(a[1])}"
        if self.kind == "rotate":
            return f"rotate {TENANT_NAMES[a[0]]}"
        return f"{self.kind} {rn(a[0])}"


@dataclass
class Machine:
    """Initial state, actions (guard + effect) and invariant predicates of one scope."""

    scope: Scope
    actions: list[Action] = field(init=False)
    fair: list[int] = field(init=False)  # fairness family per action (-1 = no fairness)

    def __post_init__(self) -> None:
        s = self.scope
        self.nk = s.tenants * s.keys
        acts: list[Action] = []
        for r in range(s.regions):
            for key in range(self.nk):
                for d in range(s.payloads):
                    acts.append(Action("submit", (r, key, d, 0)))
                for kind in (1, 2):
                    acts.append(Action("submit", (r, key, 0, kind)))
        for kind in ("sync", "process", "ship", "crash", "restart", "partition", "heal"):
            acts += [Action(kind, (r,)) for r in range(s.regions)]
        acts += [Action("replay", (d, src)) for d in range(s.regions) for src in range(s.regions) if d != src]
        acts += [Action("rotate", (t,)) for t in range(s.tenants)]
        self.actions = acts
        fams: list[int] = []
        n = 0
        for a in acts:
            if a.kind in FAIR_KINDS:
                fams.append(n)
                n += 1
            else:
                fams.append(-1)
        self.fair = fams
        self.n_fair = n
        nr = s.regions
        g: dict = {k: [None] * nr for k in ("sync", "process", "ship", "crash", "restart", "partition", "heal")}
        g["good"], g["bad"], g["replay"] = [[] for _ in range(nr)], [[] for _ in range(nr)], [[] for _ in range(nr)]
        g["rotate"] = []
        for a, act in enumerate(acts):
            if act.kind == "submit":
                g["good" if act.args[3] == 0 else "bad"][act.args[0]].append(a)
            elif act.kind == "replay":
                g["replay"][act.args[0]].append((act.args[1], a))
            elif act.kind == "rotate":
                g["rotate"].append(a)
            else:
                g[act.kind][act.args[0]] = a
        self._groups = g
        self._replay_memo: dict = {}

    # -- names --------------------------------------------------------------
    def region_name(self, r: int) -> str:
        return REGION_NAMES[r]

    def key_name(self, key: int) -> str:
        t, p = divmod(key, self.scope.keys)
        return f"{TENANT_NAMES[t]}/p{p + 1}"

    def sub_label(self, subs: tuple, i: int) -> str:
        o, key, d, kind, gen = subs[i]
        k = "" if kind == 0 and gen == 0 else (f" k{gen}" if kind == 0 else f" {KINDS[kind]}")
        return f"#{i + 1} {self.key_name(key)} d{d + 1}{k}@{REGION_NAMES[o]}"

    # -- the initial state ----------------------------------------------------
    def initial(self) -> tuple:
        s = self.scope
        none = (-1,) * self.nk
        reg = (1, (), (), 0, (), none, none, (0,) * s.regions, none, (), (), 0)
        return ((), (0,) * s.tenants, (reg,) * s.regions, ((),) * s.regions, (0,) * s.regions, 0, 0, 0)

    # -- the pipeline (one record through verify -> dedup -> merge -> answer) ---
    def verifies(self, sub: tuple) -> bool:
        return sub[3] == 0  # a good signature; rotations keep old keys valid everywhere

    def _merge(self, a: int, b: int) -> int:
        if a < 0:
            return b
        if self.scope.plant == "merge-keeps-later":
            return max(a, b)
        return min(a, b)  # earliest first_seen (= sub index) wins

    def _pipeline(self, r: int, subs: tuple, i: int, dedup: list, auth: list, first: list, flags: int):
        """(status, stored outcome or -1, flags); mutates dedup/auth/first."""
        sub = subs[i]
        ok = self.verifies(sub)
        if not ok and self.scope.plant == "replay-skips-verify" and sub[0] != r:
            ok = True  # planted: a peer's record is trusted without verification
        if not ok:
            return 401, -1, flags
        if not self.verifies(sub):
            flags |= F_UNVERIFIED_DEDUP  # ghost: dedup touched for a record that did not verify
        key = sub[1]
        stored = dedup[key]
        if stored < 0:
            dedup[key] = i
            if first[key] < 0:
                first[key] = i
            stored = i
        auth[key] = self._merge(auth[key], i)
        if subs[stored][2] == sub[2]:
            return 200, stored, flags
        return 409, -1, flags

    def _process(self, r: int, subs: tuple, reg: list, all_records: bool) -> None:
        """Process the next durable record (or all of them) of region ``reg`` in place."""
        wal = reg[WAL]
        cur = reg[CUR]
        if cur >= len(wal):
            return
        dedup, auth, first = list(reg[DEDUP]), list(reg[AUTH]), list(reg[FIRST])
        waiting = set(reg[WAIT])
        acked, answers = list(reg[ACKED]), list(reg[ANS])
        flags = reg[FLAGS]
        end = len(wal) if all_records else cur + 1
        while cur < end:
            i = wal[cur]
            cur += 1
            status, out, flags = self._pipeline(r, subs, i, dedup, auth, first, flags)
            if subs[i][0] == r and i in waiting:
                waiting.discard(i)
                answers.append((i, status))
                if status == 200:
                    acked.append((i, out))
        reg[CUR] = cur
        reg[DEDUP], reg[AUTH], reg[FIRST] = tuple(dedup), tuple(auth), tuple(first)
        reg[WAIT] = tuple(sorted(waiting))
        reg[ACKED], reg[ANS] = tuple(sorted(acked)), tuple(sorted(answers))
        reg[FLAGS] = flags

    def replay_from_scratch(self, r: int, subs: tuple, records: tuple) -> tuple:
        """(dedup, auth) after processing ``records`` in order on a fresh region ``r``."""
        memo_key = (r, records, subs)
        hit = self._replay_memo.get(memo_key)
        if hit is not None:
            return hit
        none = [-1] * self.nk
        dedup, auth, first = list(none), list(none), list(none)
        for i in records:
            self._pipeline(r, subs, i, dedup, auth, first, 0)
        out = (tuple(dedup), tuple(auth))
        if len(self._replay_memo) > 200_000:
            self._replay_memo.clear()
        self._replay_memo[memo_key] = out
        return out

    # -- guards and effects -----------------------------------------------------
    def _shippable(self, r: int, st: tuple) -> tuple:
        reg = st[2][r]
        recs = reg[WAL] + reg[BUF] if self.scope.plant == "ship-before-sync" else reg[WAL]
        return tuple(i for i in recs if st[0][i][0] == r)

    def enabled(self, a: int, st: tuple) -> bool:
        act = self.actions[a]
        k, args = act.kind, act.args
        s = self.scope
        subs, gens, regs, store, part, crashes, nparts, rots = st
        if k == "submit":
            r, key, d, kind = args
            if not regs[r][UP]:
                return False
            if len(subs) >= s.writes:
                return False
            return kind == 0 or sum(1 for x in subs if x[3] != 0) < s.bad
        if k == "rotate":
            return rots < s.rotations
        r = args[0]
        reg = regs[r]
        if k == "sync":
            return bool(reg[UP] and reg[BUF])
        if k == "process":
            return bool(reg[UP] and reg[CUR] < len(reg[WAL]))
        if k == "ship":
            return bool(reg[UP] and not part[r] and store[r] != self._shippable(r, st))
        if k == "crash":
            return bool(reg[UP] and crashes < s.crashes)
        if k == "restart":
            return not reg[UP]
        if k == "partition":
            return bool(not part[r] and nparts < s.partitions)
        if k == "heal":
            return bool(part[r])
        if k == "replay":
            src = args[1]
            return bool(reg[UP] and not part[r] and len(store[src]) > reg[WM][src])
        raise AssertionError(k)

    def apply(self, a: int, st: tuple) -> tuple:
        """The successor of ``st`` under action ``a`` (which must be enabled)."""
        act = self.actions[a]
        k, args = act.kind, act.args
        if k in ("rotate", "partition", "heal", "ship", "submit"):
            return self._apply_shared(k, args, st)
        return self._apply_region(k, args, st)

    def _apply_shared(self, k: str, args: tuple, st: tuple) -> tuple:
        """Actions that change more than one region's tuple or the cluster's parts."""
        subs, gens, regs, store, part, crashes, nparts, rots = st
        if k == "rotate":
            t = args[0]
            g = list(gens)
            g[t] += 1
            return (subs, tuple(g), regs, store, part, crashes, nparts, rots + 1)
        if k == "partition":
            r = args[0]
            p = list(part)
            p[r] = 1
            regs2 = regs
            if self.scope.plant == "reader-never-resumes":
                reg = list(regs[r])
                reg[FLAGS] |= F_READER_STOPPED
                regs2 = _put(regs, r, tuple(reg))
            return (subs, gens, regs2, store, tuple(p), crashes, nparts + 1, rots)
        if k == "heal":
            r = args[0]
            p = list(part)
            p[r] = 0
            regs2 = regs
            if self.scope.plant == "heal-forgets-region":
                reg = list(regs[r])
                none = (-1,) * self.nk
                reg[WAL], reg[BUF], reg[CUR], reg[WAIT] = (), (), 0, ()
                reg[DEDUP], reg[AUTH], reg[WM] = none, none, (0,) * self.scope.regions
                regs2 = _put(regs, r, tuple(reg))
            return (subs, gens, regs2, store, tuple(p), crashes, nparts, rots)
        if k == "ship":
            r = args[0]
            return (subs, gens, regs, _put(store, r, self._shippable(r, st)), part, crashes, nparts, rots)
        if k == "submit":
            r, key, d, kind = args
            i = len(subs)
            gen = gens[key // self.scope.keys] if kind == 0 else 0
            subs2 = subs + ((r, key, d, kind, gen),)
            reg = list(regs[r])
            reg[BUF] = reg[BUF] + (i,)
            reg[WAIT] = reg[WAIT] + (i,)
            return (subs2, gens, _put(regs, r, tuple(reg)), store, part, crashes, nparts, rots)
        raise AssertionError(k)

    def _apply_region(self, k: str, args: tuple, st: tuple) -> tuple:
        """Actions that change one region's tuple (and the crash budget)."""
        subs, gens, regs, store, part, crashes, nparts, rots = st
        r = args[0]
        reg = list(regs[r])
        if k == "sync":
            reg[WAL] = reg[WAL] + reg[BUF]
            reg[BUF] = ()
        elif k == "process":
            self._process(r, subs, reg, all_records=True)
        elif k == "crash":
            reg[UP], reg[BUF], reg[CUR], reg[WAIT] = 0, (), 0, ()
            if self.scope.volatile_store:
                none = (-1,) * self.nk
                reg[DEDUP], reg[AUTH], reg[WM] = none, none, (0,) * self.scope.regions
            crashes += 1
        elif k == "restart":
            reg[UP] = 1
            self._process(r, subs, reg, all_records=True)
        elif k == "replay":
            src = args[1]
            if reg[FLAGS] & F_READER_STOPPED:
                return st  # planted: the reader polls but never reads again
            start = reg[WM][src]
            shipped = store[src]
            new = tuple(i for i in shipped[start:] if subs[i][0] == src)
            reg[WAL] = reg[WAL] + new
            reg[WM] = _put(reg[WM], src, max(start, len(shipped)))
            self._process(r, subs, reg, all_records=True)
        else:
            raise AssertionError(k)
        return (subs, gens, _put(regs, r, tuple(reg)), store, part, crashes, nparts, rots)

    def successors(self, st: tuple) -> list[tuple[int, tuple]]:
        """``(action index, successor)`` for every enabled action (the guards of
        :meth:`enabled`, inlined by action kind: this is the checker's hot loop)."""
        s = self.scope
        subs, gens, regs, store, part, crashes, nparts, rots = st
        apply = self.apply
        out: list = []
        nbad = sum(1 for x in subs if x[3] != 0)
        g = self._groups
        for r, reg in enumerate(regs):
            up = reg[UP]
            if up:
                if len(subs) < s.writes:
                    out += [(a, apply(a, st)) for a in g["good"][r]]
                if len(subs) < s.writes and nbad < s.bad:
                    out += [(a, apply(a, st)) for a in g["bad"][r]]
                if reg[BUF]:
                    a = g["sync"][r]
                    out.append((a, apply(a, st)))
                if reg[CUR] < len(reg[WAL]):
                    a = g["process"][r]
                    out.append((a, apply(a, st)))
                if not part[r] and store[r] != self._shippable(r, st):
                    a = g["ship"][r]
                    out.append((a, apply(a, st)))
                if crashes < s.crashes:
                    a = g["crash"][r]
                    out.append((a, apply(a, st)))
                if not part[r]:
                    wm = reg[WM]
                    for src, a in g["replay"][r]:
                        if len(store[src]) > wm[src]:
                            out.append((a, apply(a, st)))
            else:
                a = g["restart"][r]
                out.append((a, apply(a, st)))
            if part[r]:
                a = g["heal"][r]
                out.append((a, apply(a, st)))
            elif nparts < s.partitions:
                a = g["partition"][r]
                out.append((a, apply(a, st)))
        if rots < s.rotations:
            out += [(a, apply(a, st)) for a in g["rotate"]]
        return out

    # -- invariants (safety: every reachable state) -----------------------------
    def outcome(self, subs: tuple, i: int) -> Outcome:
        o, _key, d, _kind, _gen = subs[i]
        return Outcome(float(i + 1), REGION_NAMES[o], f"d{d + 1}", 200)

    # Per-region predicates take ``(r, reg, subs)``: a region tuple that did not change
    # between a state and its successor keeps its verdict (the checker re-evaluates only
    # changed regions); ``subs`` only grows, and a region reads only the subs it holds.
    def reg_wal_first(self, r: int, reg: tuple, subs: tuple) -> bool:
        """Answers only for records in the durable WAL (the cross-region half is :meth:`wal_first_shared`)."""
        durable = set(reg[WAL])
        return all(rid in durable for rid, _ in reg[ANS])

    def reg_verify_before_dedup(self, r: int, reg: tuple, subs: tuple) -> bool:
        return not reg[FLAGS] & F_UNVERIFIED_DEDUP

    def reg_fww(self, r: int, reg: tuple, subs: tuple) -> bool:
        first = reg[FIRST]
        return all(v < 0 or first[k] == v for k, v in enumerate(reg[DEDUP]))

    def reg_no_acked_loss(self, r: int, reg: tuple, subs: tuple) -> bool:
        if not reg[UP]:
            return True
        dedup = reg[DEDUP]
        return all(dedup[subs[rid][1]] == out for rid, out in reg[ACKED])

    def reg_idempotent_replay(self, r: int, reg: tuple, subs: tuple) -> bool:
        """Re-processing the processed WAL prefix from scratch, once or twice, gives the same state."""
        if not reg[UP]:
            return True
        prefix = reg[WAL][: reg[CUR]]
        once = self.replay_from_scratch(r, subs, prefix)
        return once == (reg[DEDUP], reg[AUTH]) and self.replay_from_scratch(r, subs, prefix + prefix) == once

    def reg_tenant_isolation(self, r: int, reg: tuple, subs: tuple) -> bool:
        """Every stored (tenant, pcs_id) comes from a WAL record of that key and payload with a good signature."""
        for key, v in enumerate(reg[DEDUP]):
            if v >= 0 and not any(subs[i][1] == key and subs[i][2] == subs[v][2] and self.verifies(subs[i])
                                  for i in reg[WAL]):
                return False
        return True

    def reg_convergence_merge(self, r: int, reg: tuple, subs: tuple) -> bool:
        """The authoritative outcome per key is the merge of the verified records the region processed.

        The reference merge (:func:`flk.model.merge.merge_all`) of outcomes with distinct
        ``first_seen`` is the one of the least sub index; tests/formal/test_model_check.py
        checks that equality on every state of a scope."""
        if not reg[UP]:
            return True
        want = [-1] * self.nk
        for i in reg[WAL][: reg[CUR]]:
            sub = subs[i]
            if sub[3] == 0:
                k = sub[1]
                if want[k] < 0 or i < want[k]:
                    want[k] = i
        return tuple(want) == reg[AUTH]

    def wal_first_shared(self, st: tuple) -> bool:
        """Nothing leaves a region (object store, a peer's WAL) before it is durable there."""
        subs, regs, store = st[0], st[2], st[3]
        durable = [set(reg[WAL]) for reg in regs]
        for r, reg in enumerate(regs):
            for i in reg[WAL]:
                o = subs[i][0]
                if o != r and i not in durable[o]:
                    return False
        for r, shipped in enumerate(store):
            d = durable[r]
            if any(i not in d for i in shipped):
                return False
        return True

    def region_safety(self) -> dict:
        return {
            "INV-WAL-FIRST": self.reg_wal_first,
            "INV-VERIFY-BEFORE-DEDUP": self.reg_verify_before_dedup,
            "INV-FWW": self.reg_fww,
            "INV-NO-ACKED-LOSS": self.reg_no_acked_loss,
            "INV-IDEMPOTENT-REPLAY": self.reg_idempotent_replay,
            "INV-TENANT-ISOLATION": self.reg_tenant_isolation,
            "INV-CONVERGENCE": self.reg_convergence_merge,
        }

    def shared_safety(self) -> dict:
        return {"INV-WAL-FIRST": self.wal_first_shared}

    def safety(self) -> dict:
        """Whole-state predicates: name -> ``pred(state) -> bool`` (every ID of spec/INVARIANTS.md
        the model expresses)."""
        out = {}
        shared = self.shared_safety()
        for name, pred in self.region_safety().items():
            g = shared.get(name)
            out[name] = (lambda st, pred=pred, g=g: all(pred(r, reg, st[0]) for r, reg in enumerate(st[2]))
                         and (g is None or g(st)))
        return out

    def reference_merge(self, subs: tuple, idxs) -> Outcome | None:
        """:func:`flk.model.merge.merge_all` of the outcomes of the records ``idxs``."""
        return merge_all(self.outcome(subs, i) for i in idxs)

    # -- liveness targets (eventually) -------------------------------------------
    def converged(self, st: tuple) -> bool:
        """INV-CONVERGENCE: every region holds the same authoritative map, the merge
        of every verified durable record of every origin."""
        subs, regs = st[0], st[2]
        want: list[int] = [-1] * self.nk
        for o, reg in enumerate(regs):
            for i in reg[WAL]:
                if subs[i][0] == o and self.verifies(subs[i]):
                    key = subs[i][1]
                    want[key] = i if want[key] < 0 else min(want[key], i)
        want_t = tuple(want)
        return all(reg[AUTH] == want_t for reg in regs)

    def delivered(self, st: tuple) -> bool:
        """INV-ACKED-DELIVERY: every acknowledged write is processed by every region."""
        regs = st[2]
        acked = [rid for reg in regs for rid, _ in reg[ACKED]]
        return all(rid in reg[WAL][: reg[CUR]] for rid in acked for reg in regs)

    def liveness(self) -> dict:
        return {"INV-CONVERGENCE": self.converged, "INV-ACKED-DELIVERY": self.delivered}

    def progress_owed(self, st: tuple) -> bool:
        """Something the protocol promises to finish: a waiting client whose record is
        durable, an unprocessed durable record, a down or partitioned region, an
        unshipped durable record, or a liveness target not yet reached."""
        regs = st[2]
        for r, reg in enumerate(regs):
            if not reg[UP] or st[4][r] or reg[CUR] < len(reg[WAL]):
                return True
            if any(i in reg[WAL] for i in reg[WAIT]):
                return True
        return not (self.converged(st) and self.delivered(st))

    # -- symmetry ------------------------------------------------------------------
    def permute(self, st: tuple, rho: tuple, kmap: tuple, tau: tuple) -> tuple:
        """Rename regions (``rho``), keys (``kmap``, tenant-consistent) and tenants (``tau``)."""
        subs, gens, regs, store, part, crashes, nparts, rots = st
        subs2 = tuple((rho[o], kmap[key], d, kind, gen) for o, key, d, kind, gen in subs)
        g2 = [0] * len(gens)
        for t, v in enumerate(gens):
            g2[tau[t]] = v
        nr = len(regs)
        new_regs: list = [None] * nr
        new_store: list = [None] * nr
        new_part = [0] * nr
        nk = self.nk
        for r, reg in enumerate(regs):
            d2, a2, f2 = [-1] * nk, [-1] * nk, [-1] * nk
            dd, aa, ff = reg[DEDUP], reg[AUTH], reg[FIRST]
            for k in range(nk):
                m = kmap[k]
                d2[m], a2[m], f2[m] = dd[k], aa[k], ff[k]
            wm = reg[WM]
            wm2 = [0] * nr
            for p in range(nr):
                wm2[rho[p]] = wm[p]
            new_regs[rho[r]] = (reg[UP], reg[WAL], reg[BUF], reg[CUR], reg[WAIT], tuple(d2), tuple(a2),
                                tuple(wm2), tuple(f2), reg[ACKED], reg[ANS], reg[FLAGS])
            new_store[rho[r]] = store[r]
            new_part[rho[r]] = part[r]
        return (subs2, tuple(g2), tuple(new_regs), tuple(new_store), tuple(new_part), crashes, nparts, rots)

    def canonical(self, st: tuple) -> tuple:
        """The canonical representative of ``st``'s orbit under renaming regions,
        tenants and the pcs_ids of each tenant: the least permuted state.

        The state tuple starts with ``subs``, so every least permutation numbers
        the regions, tenants and pcs_ids that occur in ``subs`` in order of first
        occurrence; only the labels that do not occur are tried in every order.
        """
        s = self.scope
        subs = st[0]
        rho: dict[int, int] = {}
        tau: dict[int, int] = {}
        pcs: dict[int, dict[int, int]] = {}
        for o, key, _d, _kind, _gen in subs:
            if o not in rho:
                rho[o] = len(rho)
            t, p = divmod(key, s.keys)
            if t not in tau:
                tau[t] = len(tau)
            pm = pcs.setdefault(t, {})
            if p not in pm:
                pm[p] = len(pm)
        free_r = [r for r in range(s.regions) if r not in rho]
        free_t = [t for t in range(s.tenants) if t not in tau]
        if (not free_r and not free_t and all(len(pcs.get(t, ())) == s.keys for t in range(s.tenants))
                and all(rho[r] == r for r in rho) and all(tau[t] == t for t in tau)
                and all(q == p for pm in pcs.values() for p, q in pm.items())):
            return st  # every label occurs, already in first-occurrence order: st is the representative
        best = None
        for fr in itertools.permutations(free_r):
            rmap = dict(rho)
            for j, r in enumerate(fr):
                rmap[r] = len(rho) + j
            rho_t = tuple(rmap[r] for r in range(s.regions))
            for ft in itertools.permutations(free_t):
                tmap = dict(tau)
                for j, t in enumerate(ft):
                    tmap[t] = len(tau) + j
                tau_t = tuple(tmap[t] for t in range(s.tenants))
                free_p = []
                for t in range(s.tenants):
                    used = pcs.get(t, {})
                    free_p.append([p for p in range(s.keys) if p not in used])
                for fps in itertools.product(*(itertools.permutations(fp) for fp in free_p)):
                    kmap = [0] * self.nk
                    for t in range(s.tenants):
                        used = pcs.get(t, {})
                        for p in range(s.keys):
                            q = used[p] if p in used else len(used) + fps[t].index(p)
                            kmap[t * s.keys + p] = tau_t[t] * s.keys + q
                    cand = self.permute(st, rho_t, tuple(kmap), tau_t)
                    if best is None or cand < best:
                        best = cand
        return best

    # -- presentation -----------------------------------------------------------
    def describe(self, st: tuple) -> dict:
        """A readable view of a state (for counterexample steps and JSON)."""
        subs, gens, regs, store, part, crashes, nparts, rots = st
        lab = lambda i: self.sub_label(subs, i)  # noqa: E731
        out: dict = {"budgets": {"crashes": crashes, "partitions": nparts, "rotations": rots},
                     "keys": {TENANT_NAMES[t]: g for t, g in enumerate(gens)}}
        for r, reg in enumerate(regs):
            name = REGION_NAMES[r]
            keyed = lambda vec: {self.key_name(k): lab(v) for k, v in enumerate(vec) if v >= 0}  # noqa: E731
            out[name] = {
                "up": bool(reg[UP]), "partitioned": bool(part[r]),
                "wal": [lab(i) for i in reg[WAL]], "buffer": [lab(i) for i in reg[BUF]],
                "cursor": reg[CUR], "waiting": [lab(i) for i in reg[WAIT]],
                "dedup": keyed(reg[DEDUP]), "authoritative": keyed(reg[AUTH]),
                "watermarks": {REGION_NAMES[p]: w for p, w in enumerate(reg[WM]) if w},
                "answers": {lab(i): st_ for i, st_ in reg[ANS]},
                "shipped": [lab(i) for i in store[r]],
            }
            if reg[FLAGS]:
                out[name]["ghost_flags"] = reg[FLAGS]
        return out


def _put(t: tuple, i: int, v) -> tuple:
    return t[:i] + (v,) + t[i + 1:]


def diff(before: dict, after: dict, prefix: str = "") -> dict:
    """Flat ``path -> [before, after]`` of what changed between two :meth:`Machine.describe` views."""
    out: dict = {}
    for k in sorted(set(before) | set(after), key=str):
        a, b = before.get(k), after.get(k)
        if a == b:
            continue
        path = f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(diff(a, b, path + "."))
        else:
            out[path] = [a, b]
    return out
