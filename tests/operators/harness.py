"""An in-memory deployment for the controller: shared shard stores, several server
processes (each its own ``DualWriteStore`` that follows the migration state only
when it refreshes), a writer, health samples, and a controller that can be killed
between any two of its steps. Used by the Hypothesis tests of INV-OP-*."""

from __future__ import annotations

import copy

from flk.impl.dedup.base import StoredOutcome, StoreUnavailable
from flk.impl.dedup.memory import MemoryStore
from flk.impl.dedup.migrate import DECIDER, MIRROR, DualWriteStore, MigrationError
from flk.impl.dedup.sharded import ShardedStore
from flk.impl.governance.audit import AuditLog
from flk.impl.operator import driver, records
from flk.impl.operator.controller import decider_of
from flk.impl.operator.migration import MigrationTarget
from flk.impl.operator.policy import check_policy
from flk.impl.testing.crashfs import CrashableMemoryFileSystem

T0 = 1_700_000_000.0
KILL_POINTS = ("none", "after_observe", "after_save", "after_audit", "after_action")


class Killed(Exception):
    pass


def policy(**gates):
    g = {"window_s": 3.0, "min_samples": 2, "breach_fraction": 0.5, "max_latency_p95_ms": 50.0, **gates}
    return check_policy({"kind": "ShardMigration", "name": "grow", "spec": {
        "old": {f"s{i}": f"memory://s{i}" for i in range(3)},
        "new": {f"s{i}": f"memory://s{i}" for i in range(4)},
        "batch": 16, "soak_s": 2.0, "settle_s": 1.0, "vnodes": 16, "gates": g}})


def outcome(i: int, v: int = 0) -> StoredOutcome:
    return StoredOutcome(f"d{i}-{v}", 200, f'{{"k":{i},"v":{v}}}'.encode(), T0, "r1", "1.0.0")


class Deployment:
    def __init__(self, servers: int = 2, keys: int = 60) -> None:
        self.shards = {f"s{i}": MemoryStore() for i in range(4)}
        self.old = ShardedStore({k: self.shards[k] for k in ("s0", "s1", "s2")})
        self.new = ShardedStore(dict(self.shards))
        self.box: dict = {}
        self.servers = [DualWriteStore(self.old, self.new, "planned") for _ in range(servers)]
        self.target = MigrationTarget(self._load, self._save, lambda _st: (self.old, self.new))
        self.acked: dict[tuple[str, str], StoredOutcome] = {}
        self.next_key = 0
        self.one_decider_violations: list = []
        for _ in range(keys):
            self.write(0, T0)

    def _load(self):
        return copy.deepcopy(self.box.get("state"))

    def _save(self, st):
        self.box["state"] = copy.deepcopy(st)

    def write(self, server: int, now: float, reuse: int | None = None) -> None:
        i = self.next_key if reuse is None else reuse
        if reuse is None:
            self.next_key += 1
        key = ("t0", f"k{i:05d}")
        try:
            _won, winner = self.servers[server].put_if_absent(*key, outcome(i, int(now) % 7), now)
        except StoreUnavailable:
            return  # refused (a conflict between rings fails closed): never acknowledged
        prev = self.acked.setdefault(key, winner)
        assert prev == winner, f"acknowledged outcome of {key} changed"

    def refresh(self, server: int) -> None:
        st = self.box.get("state")
        if st is not None and self.servers[server].phase != st["phase"]:
            self.servers[server].set_phase(st["phase"])

    def observe(self) -> dict:
        return {"migration": self.target.observe(), "servers": [s.phase for s in self.servers]}

    def check_deciders(self) -> None:
        """INV-OP-ONE-DECIDER: servers that disagree on the decider all mirror to the other ring."""
        phases = [s.phase for s in self.servers]
        if len({DECIDER[p] for p in phases}) > 1 and not all(MIRROR.get(p) for p in phases):
            self.one_decider_violations.append(phases)

    def lost_or_changed(self, now: float) -> list:
        store = self.servers[0]
        bad = []
        for key, o in sorted(self.acked.items()):
            if store.get(*key, now) != o:
                bad.append(key)
        return bad


class Controller:
    """The controller process: its status and audit log live on a crashable disk."""

    def __init__(self, pol, dep: Deployment) -> None:
        self.pol, self.dep = pol, dep
        self.fs = CrashableMemoryFileSystem()
        self.statuses = records.StatusStore("/op/status", self.fs)
        self.log = AuditLog("/op/audit", self.fs)
        self.seen = records.audited_ids("/op/audit", self.fs)
        self.error: str | None = None
        self.moves_while_lagging: list = []

    def restart(self) -> None:
        self.fs.crash()
        self.log = AuditLog("/op/audit", self.fs)
        self.seen = records.audited_ids("/op/audit", self.fs)
        self.error = None

    def tick(self, now: float, sample: dict | None, kill: str) -> dict:
        def observe():
            obs = self.dep.observe()
            obs["sample"] = sample
            if kill == "after_observe":
                raise Killed
            return obs

        def save(st):
            self.statuses.save(self.pol.key, st)
            if kill == "after_save" and st.get("pending_audit"):
                raise Killed

        def audit(st):
            records.flush_audit(st, self.log, now, self.seen)
            if kill == "after_audit":
                raise Killed

        def execute(action):
            self._note_decider_move(action)
            try:
                self.dep.target.execute(action, now)
            except (MigrationError, StoreUnavailable) as exc:
                return str(exc)
            if kill == "after_action":
                raise Killed
            return None

        res, self.error = driver.step(self.pol, lambda: self.statuses.load(self.pol.key), save, audit, observe,
                                      execute, now, self.error, records.last_seq(self.seen, self.pol.key))
        return res.status

    def _note_decider_move(self, action: dict) -> None:
        """A phase that stops mirroring (cleaned, rolled_back) is issued only while every
        server already decides like it (INV-OP-ONE-DECIDER)."""
        if action["op"] != "migration.phase" or MIRROR.get(action["to"]):
            return
        want = decider_of(action["to"])
        lag = [s.phase for s in self.dep.servers if decider_of(s.phase) != want]
        if lag:
            self.moves_while_lagging.append((self.dep.box["state"]["phase"], action["to"], lag))

    def audit_entries(self) -> list[dict]:
        import json

        out = []
        for name, data in sorted(records.read_log_files("/op/audit", self.fs).items()):
            if name.endswith(".log"):
                out += [json.loads(line) for line in data.splitlines()]
        return out
