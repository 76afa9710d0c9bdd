"""Zero-downtime migration: 3 -> 4 real SQLite shards while
the real verify pipeline takes traffic on many threads through a
DualWriteStore that follows the state file the CLI writes; rollback; the
CLI's checkpoints, dry runs and exit-2 errors. INV-FWW across shards: no
acknowledged outcome is lost or changed, checked from the client history
against freshly opened final stores."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time

import pytest
from dedup.contract import outcome
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from verifier.pcsgen import HMAC_A, HMAC_B, body, make_pcs, registry, sign

from flk.impl.dedup import open_store
from flk.impl.dedup.migrate import DualWriteStore, MigrationConflict, load_state
from flk.impl.dedup.sharded import ShardedStore
from flk.impl.lab.cli import main
from flk.impl.testing.memwal import MemoryWal
from flk.impl.verifier.pipeline import Request, Verifier, run_sync

T0 = 2_000_000.0
OLD = ["s0", "s1", "s2"]
NEW = ["s0", "s1", "s2", "s3"]


def _urls(tmp_path, names):
    return ",".join(f"{n}=sqlite:///{tmp_path}/{n}.db" for n in names)


def cli(capsys, *argv) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    try:
        rc = main(["dedup-migrate", *argv])
    except SystemExit as exc:  # an option's argparse type refused it: a usage error, exit 2
        rc = exc.code
    out, err = capsys.readouterr()
    doc = json.loads(out) if out.strip() else None
    return rc, doc, err


def _ring_store(tmp_path, names) -> ShardedStore:
    return ShardedStore({n: open_store(f"sqlite:///{tmp_path}/{n}.db") for n in names})


class Traffic:
    """Pipeline traffic on several threads: new PCS, duplicates (also with a
    changed unsigned ``attempt``) and conflicting re-submissions (409)."""

    def __init__(self, store, threads: int = 6, seed: int = 1) -> None:
        self.store = store
        self.v = Verifier(registry(), region="eu")
        self.history: list[tuple] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.sent: list[tuple[dict, str]] = []
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(seed * 100 + i,), daemon=True)
                        for i in range(threads)]
        self.counter = 0

    def _pick(self, rng: random.Random) -> tuple[dict, str]:
        with self.lock:
            r = rng.random()
            if self.sent and r < 0.3:
                doc, tenant = rng.choice(self.sent)
                return dict(doc, attempt=rng.randint(2, 5)), tenant
            if self.sent and r < 0.4:
                doc, tenant = rng.choice(self.sent)
                key = HMAC_A if tenant == "ta" else HMAC_B
                return sign(dict(doc, coh_star=round(rng.uniform(0.1, 0.9), 3)), key), tenant
            self.counter += 1
            n = self.counter
        tenant = "ta" if n % 2 else "tb"
        doc = sign(make_pcs(seed=n * 7919 + 13), HMAC_A if tenant == "ta" else HMAC_B)
        return doc, tenant

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        wal = MemoryWal()
        try:
            while not self.stop.is_set():
                doc, tenant = self._pick(rng)
                now = time.time()
                r = run_sync(self.v.handle(Request(body(doc), tenant), now), wal, self.store)
                with self.lock:
                    self.history.append((tenant, doc["pcs_id"], r.status, r.body, now))
                    if r.status in (200, 202) and "attempt" not in doc and (doc, tenant) not in self.sent:
                        self.sent.append((doc, tenant))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        t0 = time.monotonic()
        start = len(self.history)
        while len(self.history) < start + n and time.monotonic() - t0 < timeout:
            time.sleep(0.01)

    def observe(self, phase: str, n: int, timeout: float = 30.0) -> None:
        """Run until the store applied ``phase`` by its own refresh (an operation re-reads the
        state file once ``refresh_s`` passed), then ``n`` more operations under it. A count of
        operations alone is not enough: on a fast turn they all fit in one refresh period
        that began before the CLI wrote the phase (the store kept the old one)."""
        t0 = time.monotonic()
        while self.store.phase != phase and not self.errors and time.monotonic() - t0 < timeout:
            time.sleep(0.005)
        assert self.store.phase == phase, (self.store.phase, phase, self.errors)
        self.wait_for(n)


def check_history(history, final: ShardedStore) -> dict:
    """Every 200/202 of a key has one body, and that body is the final store's
    outcome on the key's owner shard; no 5xx at all."""
    statuses = [h[2] for h in history]
    assert not [s for s in statuses if s >= 500], f"5xx during the migration: {sorted(set(statuses))}"
    acked: dict[tuple[str, str], set[bytes]] = {}
    for tenant, pid, status, rbody, _ in history:
        if status in (200, 202):
            acked.setdefault((tenant, pid), set()).add(rbody)
    now = time.time() + 1
    for key, bodies in acked.items():
        assert len(bodies) == 1, f"two acknowledged outcomes for one key: {len(bodies)}"
        stored = final.get(*key, now)
        assert stored is not None, "an acknowledged outcome was lost"
        assert stored.body == next(iter(bodies)), "an acknowledged outcome changed"
        owner = final.shards[final.shard_for(*key)]
        assert owner.get(*key, now) == stored
    return {"acked_keys": len(acked), "requests": len(statuses), "by_status": {
        s: statuses.count(s) for s in sorted(set(statuses))}}


def test_inv_fww_migrate_3_to_4_sqlite_shards_under_pipeline_traffic(tmp_path, capsys):
    state = str(tmp_path / "mig.json")
    rc, plan, _ = cli(capsys, "plan", "--state", state, "--old", _urls(tmp_path, OLD), "--new", _urls(tmp_path, NEW))
    assert rc == 0 and plan["added"] == ["s3"] and 0.15 < plan["expected_moved_fraction"] < 0.35
    store = DualWriteStore.from_state(state, time.time(), refresh_s=0.02)
    with Traffic(store) as tr:
        tr.wait_for(150)  # planned: old ring only
        assert cli(capsys, "dual-write", "--state", state)[0] == 0
        tr.observe("dual_write", 100)
        rc, first, _ = cli(capsys, "copy", "--state", state, "--batch-size", "20", "--max-batches", "3")
        assert rc == 0 and first["done"] is False and first["batch"]["scanned"] == 60  # interrupted
        tr.wait_for(50)
        rc, rest, _ = cli(capsys, "copy", "--state", state, "--batch-size", "40", "--qps", "20000")
        assert rc == 0 and rest["done"] is True and rest["phase"] == "copied"  # resumed
        assert rest["total"]["copied"] + rest["total"]["present"] > 0 and rest["total"]["conflicts"] == 0
        tr.observe("copied", 50)
        rc, ver, _ = cli(capsys, "verify", "--state", state, "--batch-size", "50", "--settle-s", "0.3")
        assert rc == 0 and ver["clean"] and ver["phase"] == "verified", json.dumps([ver, rest])
        tr.observe("verified", 50)
        assert cli(capsys, "cutover", "--state", state)[0] == 0
        tr.observe("cut_over", 150)
        assert cli(capsys, "cleanup", "--state", state)[0] == 2  # refused: no catch-up yet
        assert cli(capsys, "prune", "--state", state)[0] == 2  # refused: not cleaned yet
        rc, cu, _ = cli(capsys, "catchup", "--state", state, "--settle-s", "0.1", "--batch-size", "40")
        assert rc == 0 and cu["clean"] and cu["catchup"]["scanned"] > 0, cu
        assert cli(capsys, "cleanup", "--state", state)[0] == 0
        tr.observe("cleaned", 100)
        assert not store.count_exact  # the count includes the copies (geo divergence compares samples only)
        rc, pr, _ = cli(capsys, "prune", "--state", state, "--settle-s", "0.1", "--batch-size", "40")
        assert rc == 0 and pr["clean"] and pr["prune"]["deleted"] > 0, pr
        tr.wait_for(50)
        assert store.count_exact  # re-read from the state file: prune.done
    assert not tr.errors, tr.errors
    assert store.phase == "cleaned" and store.stats["conflicts"] == 0 and store.stats["mirrored"] > 0
    seen = store.phases
    assert seen[0] == "planned" and {"dual_write", "cut_over", "cleaned"} <= set(seen)
    assert seen == sorted(seen, key=["planned", "dual_write", "copied", "verified", "cut_over", "cleaned"].index)
    store.close()
    final = _ring_store(tmp_path, NEW)
    res = check_history(tr.history, final)
    assert res["by_status"].get(200, 0) > 100 and res["by_status"].get(409, 0) > 0, res
    # the new shard took about a quarter of the keys
    counts = final.counts(time.time())
    assert counts["s3"] > 0
    # pruned: every shard holds only the keys it owns, so the ring's count is its keys'
    for name, shard in final.shards.items():
        assert {final.shard_for(t, p) for t, p, _ in shard.scan(None, 10**6, time.time())[0]} <= {name}
    assert final.count(time.time()) == len({(t, p) for t, p, _ in final.every_copy(time.time())})
    assert load_state(state)["phase"] == "cleaned"
    final.close()


@pytest.mark.parametrize("rollback_from", ["dual_write", "cut_over"])
def test_inv_fww_rollback_restores_the_old_ring_with_nothing_lost(tmp_path, capsys, rollback_from):
    state = str(tmp_path / "mig.json")
    assert cli(capsys, "plan", "--state", state, "--old", _urls(tmp_path, OLD), "--new", _urls(tmp_path, NEW))[0] == 0
    store = DualWriteStore.from_state(state, time.time(), refresh_s=0.02)
    with Traffic(store, seed=2) as tr:
        tr.wait_for(80)
        assert cli(capsys, "dual-write", "--state", state)[0] == 0
        tr.observe("dual_write", 60)
        assert cli(capsys, "copy", "--state", state, "--batch-size", "25", "--max-batches", "2")[0] == 0
        if rollback_from == "cut_over":
            assert cli(capsys, "copy", "--state", state)[0] == 0
            assert cli(capsys, "verify", "--state", state)[0] == 0
            assert cli(capsys, "cutover", "--state", state)[0] == 0
            tr.observe("cut_over", 120)  # the new ring decides; the old ring is mirrored
        tr.wait_for(60)
        rc, doc, _ = cli(capsys, "rollback", "--state", state, "--settle-s", "0.2")
        assert rc == 0 and doc["from"] == rollback_from and doc["phase"] == "rolled_back"
        assert doc["via"] == (["verified"] if rollback_from == "cut_over" else [])
        tr.observe("rolled_back", 80)
    assert not tr.errors, tr.errors
    assert store.phase == "rolled_back"
    store.close()
    old = _ring_store(tmp_path, OLD)
    check_history(tr.history, old)
    old.close()


def test_verify_finds_a_write_that_bypassed_the_migration_and_copy_restart_fixes_it(tmp_path, capsys):
    state = str(tmp_path / "mig.json")
    cli(capsys, "plan", "--state", state, "--old", _urls(tmp_path, OLD), "--new", _urls(tmp_path, NEW))
    old = _ring_store(tmp_path, OLD)
    now = time.time()
    for i in range(60):
        old.put_if_absent("t", f"p{i}", outcome(i, first_seen=now), now)
    assert cli(capsys, "dual-write", "--state", state)[0] == 0
    rc, dry, _ = cli(capsys, "copy", "--state", state, "--dry-run")
    assert rc == 0 and dry["dry_run"] and dry["batch"]["moving"] > 0 and dry["batch"]["copied"] == 0
    assert _ring_store(tmp_path, ["s3"]).count(now) == 0  # the dry run wrote nothing
    assert load_state(state)["copy"]["scanned"] == 0
    assert cli(capsys, "copy", "--state", state)[0] == 0
    # a writer that bypasses the migration (straight into an old shard, a key s3 will own)
    i = 1000
    new_ring = _ring_store(tmp_path, NEW)
    while new_ring.shard_for("t", f"p{i}") != "s3":
        i += 1
    old.put_if_absent("t", f"p{i}", outcome(i, first_seen=now), now)
    rc, ver, _ = cli(capsys, "verify", "--state", state, "--settle-s", "0.05")
    assert rc == 1 and ver["verify"]["missing"] == 1 and ver["phase"] == "copied"
    assert cli(capsys, "cutover", "--state", state)[0] == 2  # refused: verify is not clean
    assert cli(capsys, "copy", "--state", state, "--restart")[0] == 0
    rc, ver, _ = cli(capsys, "verify", "--state", state)
    assert rc == 0 and ver["clean"]
    assert new_ring.get("t", f"p{i}", now + 1) == outcome(i, first_seen=now)
    rc, st, _ = cli(capsys, "status", "--state", state)
    assert rc == 0 and st["phase"] == "verified" and [h["phase"] for h in st["history"]] == [
        "planned", "dual_write", "copied", "verified"]
    old.close()
    new_ring.close()


def test_mirror_conflict_fails_closed(tmp_path):
    old = _ring_store(tmp_path, OLD)
    new = ShardedStore({n: open_store(f"sqlite:///{tmp_path}/n-{n}.db") for n in NEW})
    now = time.time()
    new.put_if_absent("t", "k", outcome(2, first_seen=now), now)  # stale data in the new ring
    s = DualWriteStore(old, new, "dual_write")
    with pytest.raises(MigrationConflict):
        s.put_if_absent("t", "k", outcome(1, first_seen=now), now)
    assert s.stats["conflicts"] == 1
    s.close()


@pytest.mark.parametrize("argv,msg", [
    (["cutover"], "cannot go from planned to cut_over"),
    (["copy"], "copy runs in phase dual_write"),
    (["verify"], "verify runs after copy"),
    (["cleanup"], "cannot go from planned"),
    (["prune"], "prune runs in phase cleaned"),
    (["copy", "--batch-size", "0"], "--batch-size"),
    (["copy", "--qps", "-1"], "--qps"),
])
def test_cli_refused_steps_exit_2(tmp_path, capsys, argv, msg):
    state = str(tmp_path / "mig.json")
    cli(capsys, "plan", "--state", state, "--old", _urls(tmp_path, OLD), "--new", _urls(tmp_path, NEW))
    rc, out, err = cli(capsys, argv[0], "--state", state, *argv[1:])
    assert rc == 2 and out is None and msg in err and "Traceback" not in err


def test_cli_bad_plans_exit_2(tmp_path, capsys):
    state = str(tmp_path / "mig.json")
    cases = [
        (["--old", "s0", "--new", "s0=memory"], "NAME=URL"),
        (["--old", "s0=memory", "--new", "s1=memory"], "a shard URL must be"),
        (["--old", "s0=bogus://x", "--new", "s1=sqlite:///x.db"], "a shard URL must be"),
        (["--old", f"s0=sqlite:///{tmp_path}/a.db", "--new", f"s0=sqlite:///{tmp_path}/b.db"], "different URLs"),
        (["--old", f"s0=sqlite:///{tmp_path}/a.db", "--new", f"s0=sqlite:///{tmp_path}/a.db"], "the same"),
        (["--old", "bad name=sqlite:///a.db", "--new", "s1=sqlite:///b.db"], "shard name"),
        (["--old", "s0=sqlite:///a.db", "--new", "s0=sqlite:///a.db,s0=sqlite:///a.db"], "twice"),
        (["--new", "s0=sqlite:///a.db"], "--old NAME=URL is required"),
    ]
    for args, msg in cases:
        rc, out, err = cli(capsys, "plan", "--state", state, *args)
        assert rc == 2 and msg in err and out is None, (args, err)
    rc, out, err = cli(capsys, "status", "--state", str(tmp_path / "none.json"))
    assert rc == 2 and "no migration state" in err
    (tmp_path / "junk.json").write_text("{not json")
    rc, out, err = cli(capsys, "status", "--state", str(tmp_path / "junk.json"))
    assert rc == 2 and "unreadable" in err
    # dry-run plan writes nothing; a second plan over an existing state needs --force
    rc, doc, _ = cli(capsys, "plan", "--state", state, "--old", _urls(tmp_path, OLD), "--new",
                     _urls(tmp_path, NEW), "--dry-run")
    assert rc == 0 and doc["dry_run"] and not (tmp_path / "mig.json").exists()
    assert cli(capsys, "plan", "--state", state, "--old", _urls(tmp_path, OLD), "--new", _urls(tmp_path, NEW))[0] == 0
    rc, _, err = cli(capsys, "plan", "--state", state, "--old", _urls(tmp_path, OLD), "--new", _urls(tmp_path, NEW))
    assert rc == 2 and "--force" in err
    digest = hashlib.sha256((tmp_path / "mig.json").read_bytes()).hexdigest()
    assert cli(capsys, "dual-write", "--state", state, "--dry-run")[0] == 0
    assert hashlib.sha256((tmp_path / "mig.json").read_bytes()).hexdigest() == digest


_PATHS = {
    "cleaned": ["dual_write", "copied", "verified", "cut_over", "cleaned"],
    "rb_dual": ["dual_write", "rolled_back"],
    "rb_copied": ["dual_write", "copied", "rolled_back"],
    "rb_verified": ["dual_write", "copied", "verified", "rolled_back"],
    "rb_cut": ["dual_write", "copied", "verified", "cut_over", "verified", "rolled_back"],
}
_OP = st.tuples(st.sampled_from(["get", "put", "put", "copy", "copy"]), st.integers(0, 11), st.integers(0, 9))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(sorted(_PATHS)), segments=st.lists(st.lists(_OP, max_size=16), min_size=6, max_size=6))
@example(path="cleaned", segments=[[], [("copy", 0, 3)] * 8 + [("put", 3, 1)], [], [], [], [("get", 3, 0)]])
@example(path="rb_cut", segments=[[], [], [], [], [("put", 5, 2), ("put", 10, 3)], [("get", 5, 0)]])
def test_inv_fww_dual_write_phases_agree_with_a_dict_model(path, segments):
    """Random writes, reads and copy batches in every phase of a random path
    through the phase machine (completion or a rollback from each phase) on
    memory shards: every read answers the key's first outcome, every put
    returns it, and at the end the deciding ring holds every outcome ever
    acknowledged. The explicit examples: a write after the copy passed its key
    (only the dual-write mirror brings it to the new ring), and writes while the
    new ring decides, then a rollback (only the mirror to the old ring keeps them)."""
    from flk.impl.dedup.memory import MemoryStore
    from flk.impl.dedup.migrate import (
        RingSpec,
        catchup_step,
        copy_step,
        new_state,
        prune_step,
        transition,
    )

    pool = {n: MemoryStore() for n in NEW}
    old = ShardedStore({n: pool[n] for n in OLD})
    new = ShardedStore({n: pool[n] for n in NEW})
    state = new_state(RingSpec({n: n for n in OLD}), RingSpec({n: n for n in NEW}), T0)
    s = DualWriteStore(old, new, "planned")
    model: dict = {}
    now = T0
    for seg, to in zip(segments, [*_PATHS[path], None], strict=False):
        for op, k, v in seg:
            now += 1.0
            key = ("t", f"k{k}")
            if op == "copy":
                if s.phase == "dual_write" and not state["copy"]["done"]:
                    copy_step(state, old, new, now, 1 + v % 4)
            elif op == "get":
                assert s.get(*key, now) == model.get(key)
            else:
                o = outcome(v, first_seen=now)
                want = (False, model[key]) if key in model else (True, o)
                assert s.put_if_absent(*key, o, now) == want
                model.setdefault(key, o)
        if to is None:
            break
        if to == "copied":
            while not state["copy"]["done"]:
                copy_step(state, old, new, now, 3)
        if to == "verified":
            state["verify"].update(done=True)
        if to == "cleaned":
            while not state["catchup"]["done"]:
                catchup_step(state, old, new, now, 3, settle_s=0.0)
        transition(state, to, now)
        s.set_phase(to)
    if s.phase == "cleaned":  # the prune: each shard keeps only its own keys, and no answer changes
        while not state["prune"]["done"]:
            prune_step(state, new, now + 5.0, 2)
        assert state["prune"]["missing"] == state["prune"]["different"] == 0
        for name, shard in new.shards.items():
            assert all(new.shard_for(t, p) == name for t, p, _ in shard.scan(None, 1000, now)[0])
    decider = new if s.phase in ("cut_over", "cleaned") else old
    for key, o in model.items():
        assert decider.get(*key, now) == o
    if s.phase == "cleaned":
        assert new.count(now) == len(model)
    assert s.stats["conflicts"] == 0


def test_a_slow_state_read_never_applies_an_older_phase_after_a_newer_one(tmp_path, capsys, monkeypatch):
    """Regression (CI, stop 41): thread A read the state file (dual_write), stalled, and applied
    it after thread B had read and applied the newer phase; the store went planned ->
    dual_write -> planned... Reads are serialised: a refresh that finds one in progress keeps
    the current phase."""
    import flk.impl.dedup.migrate as mig

    state = str(tmp_path / "mig.json")
    assert cli(capsys, "plan", "--state", state, "--old", _urls(tmp_path, OLD), "--new", _urls(tmp_path, NEW))[0] == 0
    store = DualWriteStore.from_state(state, 0.0, refresh_s=1.0)
    real = mig.load_state
    a_read, a_go = threading.Event(), threading.Event()

    def slow_first(path):
        doc = real(path)
        if threading.current_thread().name == "A":
            a_read.set()
            assert a_go.wait(10)
        return doc

    monkeypatch.setattr(mig, "load_state", slow_first)
    a = threading.Thread(target=store.refresh, args=(10.0,), name="A")
    a.start()
    assert a_read.wait(10)  # A holds the file's planned
    assert cli(capsys, "dual-write", "--state", state)[0] == 0
    store.refresh(20.0)  # B: a newer read while A's is in flight
    a_go.set()
    a.join(10)
    store.refresh(30.0)
    assert store.phases == ["planned", "dual_write"], store.phases
    store.close()


def test_inv_fww_prune_keeps_a_copy_whose_owner_lacks_the_key_or_holds_another_outcome(tmp_path, capsys):
    """The prune deletes a copy only once its owner holds the very same outcome: a copy whose
    owner lacks the key (it could be the only one) or holds another outcome (the evidence of a
    double decision) is kept, counted and named, and ``flk dedup-migrate prune`` exits 1."""
    state = str(tmp_path / "mig.json")
    assert cli(capsys, "plan", "--state", state, "--old", _urls(tmp_path, OLD), "--new", _urls(tmp_path, NEW))[0] == 0
    now = time.time()
    ring = _ring_store(tmp_path, NEW)
    keys = [("t", f"k{i}") for i in range(400)]
    moved = [k for k in keys if ring.shard_for(*k) == "s3"]
    assert len(moved) >= 3
    for i, k in enumerate(keys):  # every key written where the old ring put it
        ring.shards[ShardedStore({n: ring.shards[n] for n in OLD}).shard_for(*k)].put_if_absent(*k, outcome(i), now)
    lacking, other, *copied = moved
    for k in copied:  # the migration's copies
        ring.shards["s3"].put_if_absent(*k, outcome(keys.index(k)), now)
    ring.shards["s3"].put_if_absent(*other, outcome(9999), now)
    doc = load_state(state)
    doc.update(phase="cleaned")
    doc["prune"]["after"] = now - 10
    from flk.impl.dedup.migrate import save_state

    save_state(state, doc)
    rc, pr, _ = cli(capsys, "prune", "--state", state, "--batch-size", "7")
    assert rc == 1 and pr["done"] and not pr["clean"], pr
    p = pr["prune"]
    assert (p["deleted"], p["missing"], p["different"]) == (len(copied), 1, 1), p
    assert {(e["kind"], e["owner"]) for e in p["examples"]} == {("missing", "s3"), ("different", "s3")}
    at = time.time()
    for k in (lacking, other):  # both kept where they were
        assert ring.shards[ShardedStore({n: ring.shards[n] for n in OLD}).shard_for(*k)].get(*k, at) is not None
    assert ring.count(at) == len(keys) + 1  # every key once, and the differing key's second copy (kept)
    ring.shards["s3"].put_if_absent(*lacking, outcome(keys.index(lacking)), at)  # the operator's repair
    rc, pr, _ = cli(capsys, "prune", "--state", state, "--restart", "--settle-s", "0")
    assert rc == 1 and (pr["prune"]["deleted"], pr["prune"]["missing"], pr["prune"]["different"]) == (1, 0, 1), pr
    assert ring.count(time.time()) == len(keys) + 1
    ring.close()
