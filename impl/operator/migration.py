"""The deployment side of a ShardMigration: carries out the controller's actions on a migration state.

Why this module exists: the controller only *decides*; something must run
``migration.plan`` / ``migration.phase`` / ``migration.copy`` /
``migration.verify`` / ``migration.catchup`` / ``migration.prune`` on a
``flk dedup-migrate`` state (:mod:`flk.impl.dedup.migrate`) and report what it sees. The server's operator routes, the simulator and the
tests use this one class, over a state file or a dict, so the steps are the
migration's own functions (``new_state``, ``transition``, ``copy_step``,
``verify_step``, ``settle_suspects``, ``catchup_step``, ``prune_step``), never a second
implementation.

Every action is idempotent (see :mod:`.controller`): ``plan`` of the same rings
again is a no-op, a phase change is a compare-and-set, copy and verify carry
the controller's ``round`` (a higher round restarts them once; the same round
resumes from the checkpoint), a verify that found suspects waits ``settle_s``
by time passed in (no sleep) before re-checking them. Time is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..dedup import migrate as m


class MigrationTarget:
    """``load() -> state | None``, ``save(state)``, ``rings(state) -> (old, new)``;
    ``on_phase(phase)`` is called after a phase change was saved (the simulator
    applies it to its store; servers follow the state file by themselves)."""

    def __init__(self, load: Callable[[], dict | None], save: Callable[[dict], None],
                 rings: Callable[[dict], tuple], on_phase: Callable[[str], None] | None = None) -> None:
        self.load, self.save, self.rings = load, save, rings
        self.on_phase = on_phase or (lambda _p: None)

    def observe(self) -> dict | None:
        st = self.load()
        if st is None:
            return None
        v = st["verify"]
        return {"phase": st["phase"],
                "copy": {k: st["copy"].get(k) for k in ("done", "scanned", "copied", "present", "conflicts")}
                | {"round": int(st["copy"].get("round", 1))},
                "verify": {k: v.get(k) for k in ("done", "checked", "missing", "different")}
                | {"round": int(v.get("round", 1)), "suspects": len(v.get("suspects", []))},
                "catchup": {k: st["catchup"].get(k) for k in ("done", "scanned", "copied", "different")},
                "prune": {k: st["prune"].get(k) for k in ("done", "scanned", "deleted", "missing", "different")}}

    def execute(self, action: Mapping, now: float) -> dict:
        """Carry out one action; raises ``MigrationError`` (refused) or ``StoreUnavailable``."""
        op = action.get("op")
        if op == "migration.plan":
            return self._plan(action, now)
        st = self.load()
        if st is None:
            raise m.MigrationError("no migration state (plan first)")
        if op == "migration.phase":
            return self._phase(st, str(action["to"]), tuple(action["from"]), now)
        if op == "migration.copy":
            return self._copy(st, int(action["round"]), int(action["batch"]), now)
        if op == "migration.verify":
            return self._verify(st, int(action["round"]), int(action["batch"]), float(action["settle_s"]), now)
        if op == "migration.catchup":
            return self._catchup(st, int(action["batch"]), now)
        if op == "migration.prune":
            return self._prune(st, int(action["batch"]), now)
        raise m.MigrationError(f"unknown action {op!r}")

    def _plan(self, action: Mapping, now: float) -> dict:
        old = m.RingSpec(dict(action["old"]), int(action["vnodes"]), int(action["probes"]))
        new = m.RingSpec(dict(action["new"]), int(action["vnodes"]), int(action["probes"]))
        st = self.load()
        if st is not None:
            if st["old"] == old.to_json() and st["new"] == new.to_json():
                return {"planned": False, "phase": st["phase"]}
            raise m.MigrationError("a migration state for other rings exists")
        st = m.new_state(old, new, now)
        self.save(st)
        return {"planned": True, "phase": st["phase"]}

    def _phase(self, st: dict, to: str, allowed: tuple, now: float) -> dict:
        cur = st["phase"]
        if cur == to:
            return {"changed": False, "phase": cur}
        if cur not in allowed:
            raise m.MigrationError(f"phase is {cur}, not one of {', '.join(allowed)}")
        m.transition(st, to, now)
        self.save(st)
        self.on_phase(to)
        return {"changed": True, "phase": to}

    def _copy(self, st: dict, rnd: int, batch: int, now: float) -> dict:
        if int(st["copy"].get("round", 1)) < rnd:
            fresh = m.new_state(m.RingSpec.from_json(st["old"]), m.RingSpec.from_json(st["new"]), now)
            st["copy"] = {**fresh["copy"], "round": rnd}
            self.save(st)
        if st["copy"]["done"]:
            return self._copied(st, now)
        old, new = self.rings(st)
        out = m.copy_step(st, old, new, now, batch)
        st["copy"].setdefault("round", rnd)
        self.save(st)
        if st["copy"]["done"]:
            self._copied(st, now)
        return out

    def _copied(self, st: dict, now: float) -> dict:
        changed = st["phase"] == "dual_write"
        if changed:
            m.transition(st, "copied", now)
        m.reset_verify(st)
        st["verify"]["round"] = int(st["copy"].get("round", 1))
        self.save(st)
        if changed:
            self.on_phase("copied")
        return {"copied": True}

    def _verify(self, st: dict, rnd: int, batch: int, settle_s: float, now: float) -> dict:
        v = st["verify"]
        if int(v.get("round", 1)) < rnd:
            m.reset_verify(st)
            st["verify"]["round"] = rnd
            v = st["verify"]
        if st["phase"] != "copied":
            return {"phase": st["phase"]}
        if not v["done"]:
            old, new = self.rings(st)
            out = m.verify_step(st, old, new, now, batch)
            self.save(st)
            if not st["verify"]["done"]:
                return out
            v = st["verify"]
        if v.get("suspects"):
            if v.get("settle_at") is None:
                v["settle_at"] = now + settle_s
                self.save(st)
                return {"settling": True}
            if now < float(v["settle_at"]):
                return {"settling": True}
            old, new = self.rings(st)
            m.settle_suspects(st, old, new, now)
            self.save(st)
        if v["missing"] == 0 and v["different"] == 0:
            m.transition(st, "verified", now)
            self.save(st)
            self.on_phase("verified")
            return {"verified": True}
        return {"verified": False, "missing": v["missing"], "different": v["different"]}

    def _catchup(self, st: dict, batch: int, now: float) -> dict:
        """One catch-up batch (cut_over only; a no-op once done or in another phase); the first
        waits :data:`flk.impl.dedup.migrate.CATCHUP_SETTLE_S` after the cutover (no sleep)."""
        if st["phase"] != "cut_over" or st["catchup"]["done"]:
            return {"phase": st["phase"], "done": bool(st["catchup"]["done"])}
        old, new = self.rings(st)
        out = m.catchup_step(st, old, new, now, batch)
        self.save(st)
        return out

    def _prune(self, st: dict, batch: int, now: float) -> dict:
        """One prune batch (cleaned only; a no-op once done or in another phase); the first waits
        :data:`flk.impl.dedup.migrate.CATCHUP_SETTLE_S` after the cleanup (no sleep)."""
        if st["phase"] != "cleaned" or st["prune"]["done"]:
            return {"phase": st["phase"], "done": bool(st["prune"]["done"])}
        _old, new = self.rings(st)
        out = m.prune_step(st, new, now, batch)
        self.save(st)
        return out


def memory_target(state_box: dict, old, new, store=None) -> MigrationTarget:
    """A target over a dict (``state_box["state"]``) and two in-memory rings; ``store`` (a
    ``DualWriteStore``) follows every phase change at once (one process)."""
    import copy

    def load():
        st = state_box.get("state")
        return copy.deepcopy(st) if st is not None else None

    def save(st):
        state_box["state"] = copy.deepcopy(st)

    def on_phase(p):
        if store is not None:
            store.set_phase(p)

    return MigrationTarget(load, save, lambda _st: (old, new), on_phase)
