"""Refinement: the in-process verify pipeline (flk.impl.verifier.pipeline + a dedup store)
behaves as the model region (flk.model.region) on Hypothesis-generated traces.

Rules: submit with the tenant's key, a forged signature, or another tenant's
key; duplicates; conflicting payloads (same pcs_id, different signed subset);
crash (a memory store loses everything, SQLite keeps its file) and restart
(replay of the inbox WAL through the pipeline); key rotation. After every
step: the answers agree, the store holds exactly the model's outcomes
(digest, status, first_seen), and the model's invariants hold. Runs against
the memory and the SQLite store; the same machine runs on the Redis and
Postgres stores (test_refinement_backends.py) and against a live ``flk serve``
over HTTP (test_refinement_live.py) through the system-under-test hooks
``_send`` / ``_crash_sut`` / ``_rotate_sut``. Replication (ship/replay between
regions) and partition/heal are not modelled here yet.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from verifier.pcsgen import HMAC_A, HMAC_A2, HMAC_B, body, make_pcs, registry, sign

from flk.impl.dedup import open_store
from flk.impl.dedup.base import BatchMixin
from flk.impl.testing.memwal import MemoryWal
from flk.impl.verifier.core import replay_records
from flk.impl.verifier.pipeline import (
    Request,
    Verifier,
    payload_digest,
    run_sync,
)
from flk.model import invariants as inv
from flk.model.region import Region, Submission

KEYS = {"ta": {"a1": HMAC_A, "a2": HMAC_A2}, "tb": {"b1": HMAC_B}}


@dataclass(frozen=True)
class Answer:
    """What the system under test answered, in the terms the checks compare."""

    status: int
    replayed: bool  # Idempotent-Replayed: true
    content_type: str
    body: bytes


def _registry(rotated: bool):
    if not rotated:
        return registry()
    return registry(ta={"keys": [{"id": "a1", "secret": HMAC_A.decode()},
                                 {"id": "a2", "secret": HMAC_A2.decode()}]})


class Refinement(RuleBasedStateMachine):
    store_kind = "memory"
    tmpdir = None

    def __init__(self) -> None:
        super().__init__()
        self.n = next(_instances)
        self.rotated = False
        self.verifier = Verifier(_registry(False), region="eu")
        self.wal = MemoryWal()
        self.store = self._open()
        self.model = Region("eu", {"ta": frozenset({"ta:a1"}), "tb": frozenset({"tb:b1"})},
                            dedup_durable=self.store_kind != "memory")
        self.now = 1000.0
        self.rid = itertools.count(1)
        self.labels: dict[str, str] = {}  # real payload digest -> model label
        self.sent: list[tuple[str, int, int]] = []

    def _open(self):
        if self.store_kind == "mutant-no-tenant":
            return _NoTenantStore(_shared)
        if self.store_kind == "memory":
            return open_store("memory")
        return open_store("sqlite", path=str(self.tmpdir / f"dedup-{self.n}.db"))

    def _submit(self, tenant: str, seed: int, variant: int, signer: str) -> None:
        doc = make_pcs(seed=seed, coh=0.73 + 0.01 * variant)
        own = sorted(k for k in KEYS[tenant] if tenant != "ta" or self.rotated or k == "a1")[-1]
        if signer == "own":
            key, key_id = KEYS[tenant][own], f"{tenant}:{own}"
        elif signer == "other":
            other = "tb" if tenant == "ta" else "ta"
            key, key_id = KEYS[other][sorted(KEYS[other])[0]], f"{other}:x"
        else:
            key, key_id = hashlib.sha256(b"forged").digest(), f"{tenant}:forged"
        signed = sign(doc, key)
        digest = payload_digest(signed)
        label = self.labels.setdefault(digest, f"d{len(self.labels)}")
        key = (tenant, signed["pcs_id"])
        before = self.model.dedup.get(key)
        ans, self.now = self._send(tenant, signed)
        rid = next(self.rid)
        verdict = ans.status if ans.status in (200, 202) else 200
        self.model.submit(Submission(rid, tenant, signed["pcs_id"], label, key_id, verdict), self.now)
        self.model.sync()
        self.model.drain()
        self._check_answer(ans, self.model.answers[rid], key, before, signer)
        self.sent.append((tenant, seed, variant))

    # -- the system under test (subclasses drive other ones: tests/formal/test_refinement_live.py) --
    def _send(self, tenant: str, signed: dict) -> tuple[Answer, float]:
        """Run one request through the implementation; (its answer, the receive time)."""
        now = self.now + 1.0
        resp = run_sync(self.verifier.handle(Request(body(signed), tenant), now), self.wal, self.store)
        return Answer(resp.status, resp.header("Idempotent-Replayed") == "true",
                      resp.header("Content-Type") or "", resp.body), now

    def _crash_sut(self) -> None:
        self.store.close()
        self.store = self._open()  # memory: empty again; sqlite: the same file
        replay_records(self.verifier, self.wal.records, self.store)

    def _rotate_sut(self) -> None:
        self.verifier = Verifier(_registry(True), region="eu")

    def _check_answer(self, ans: Answer, want: int, key, before, signer: str) -> None:
        """The answer is the model's: status; a 200/202 replays (header) iff the key was already
        stored, and carries the stored outcome (pcs_id, first_seen, region, accepted/escalated);
        a 401/409 is a problem+json of the matching type and never a replay."""
        assert ans.status == want, (ans.status, want, signer)
        if want in (200, 202):
            out = self.model.dedup[key]
            assert ans.replayed == (before is not None), (ans.replayed, before)
            doc = json.loads(ans.body)
            assert (doc["pcs_id"], doc["first_seen"], doc["region"]) == (key[1], out.first_seen, out.region), doc
            assert (doc["accepted"], doc["escalated"]) == (want == 200, want == 202), doc
        else:
            assert ans.content_type.startswith("application/problem+json") and not ans.replayed
            assert json.loads(ans.body)["type"].endswith({401: ":bad-signature", 409: ":conflict"}[want])

    @rule(tenant=st.sampled_from(["ta", "tb"]), seed=st.integers(1, 3), variant=st.integers(0, 1),
          signer=st.sampled_from(["own", "own", "other", "forged"]))
    def submit(self, tenant, seed, variant, signer):
        self._submit(tenant, seed, variant, signer)

    @rule(data=st.data())
    def duplicate_or_conflict(self, data):
        if not self.sent:
            return
        tenant, seed, variant = data.draw(st.sampled_from(self.sent))
        self._submit(tenant, seed, data.draw(st.sampled_from([variant, 1 - variant])), "own")

    @rule()
    def crash_and_restart(self):
        self._crash_sut()
        self.model.crash()
        self.model.restart()

    @rule()
    def rotate_key(self):
        self.rotated = True
        self._rotate_sut()
        self.model.rotate_key("ta", "ta:a2")

    @invariant()
    def store_refines_model(self):
        assert inv.violated(self.model) == []
        assert self.store.count(self.now) == len(self.model.dedup)
        back = {v: k for k, v in self.labels.items()}
        for (tenant, pcs_id), out in self.model.dedup.items():
            got = self.store.get(tenant, pcs_id, self.now)
            assert got is not None, (tenant, pcs_id)
            assert got.payload_digest == back[out.payload_digest]
            assert got.status == out.status and got.first_seen == out.first_seen and got.region == "eu"

    def teardown(self):
        self.store.close()


_instances = itertools.count()
_shared: dict = {}


class _NoTenantStore(BatchMixin):
    """Planted bug: dedup keyed by pcs_id only (not scoped by tenant); its batch calls are
    the per-item calls in order (what the verification core's replay uses)."""

    def __init__(self, d: dict) -> None:
        self.d = d

    def get(self, tenant, pcs_id, now):
        return self.d.get(pcs_id)

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        if pcs_id in self.d:
            return False, self.d[pcs_id]
        self.d[pcs_id] = outcome
        return True, outcome

    def count(self, now):
        return len(self.d)

    def close(self):
        pass
SETTINGS = settings(max_examples=25, stateful_step_count=20, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def test_inv_fww_refinement_memory_store():
    Refinement.store_kind = "memory"
    Refinement.TestCase.settings = SETTINGS
    Refinement.TestCase().runTest()


def test_inv_fww_refinement_sqlite_store(tmp_path):
    Refinement.store_kind = "sqlite"
    Refinement.tmpdir = tmp_path
    Refinement.TestCase.settings = SETTINGS
    Refinement.TestCase().runTest()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_inv_verify_before_dedup_refinement_is_not_vacuous(kind, tmp_path):
    """One fixed trace exercising every answer kind, so the machine's rules are known to reach them."""
    Refinement.store_kind = kind
    Refinement.tmpdir = tmp_path
    m = Refinement()
    m._submit("ta", 1, 0, "own")
    m._submit("ta", 1, 0, "own")
    m._submit("ta", 1, 1, "own")
    m._submit("tb", 2, 0, "forged")
    m._submit("tb", 2, 0, "other")
    m.crash_and_restart()
    m.rotate_key()
    m._submit("ta", 3, 0, "own")
    m.store_refines_model()
    assert sorted(set(m.model.answers.values())) == [200, 401, 409]
    m.teardown()


def test_inv_tenant_isolation_refinement_catches_store_not_scoped_by_tenant():
    """Quality check: the machine fails on a dedup store that ignores the tenant."""
    Refinement.store_kind = "mutant-no-tenant"
    Refinement.TestCase.settings = settings(SETTINGS, max_examples=50, database=None)
    _shared.clear()

    class Fresh(Refinement):
        def __init__(self) -> None:
            _shared.clear()
            super().__init__()

    Fresh.TestCase.settings = Refinement.TestCase.settings
    with pytest.raises((AssertionError, ExceptionGroup)) as info:  # several distinct failures -> a group
        Fresh.TestCase().runTest()
    failures = info.value.exceptions if isinstance(info.value, ExceptionGroup) else [info.value]
    assert all(isinstance(e, AssertionError) for e in failures)
