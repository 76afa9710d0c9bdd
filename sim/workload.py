"""Simulated agents: they build signed PCS, submit them through the real
retrying client state machine (:class:`flk.impl.agent.client.Submission`) over the
simulated network, and record what they sent and what came back.

Kinds of submission (chosen per logical request from the agent's own stream):

* ``valid``    -- a new PCS;
* ``dup``      -- an earlier valid PCS of this agent, resent as a new request (re-signed with
  the tenant's current key, as an agent does after a rotation: same signed subset);
* ``bad_sig``  -- a new PCS whose signature is corrupted (must be 401, never stored);
* ``conflict`` -- an earlier pcs_id with a different, validly signed payload (409);
* ``tampered`` -- a new PCS changed after signing (coh-star moved; must be 401);
* ``forged``   -- a new PCS signed with a key that is not the tenant's (must be 401);
* ``out_of_policy`` -- a new PCS, validly signed, whose claimed D-hat its counts do not
  support (must not be accepted: escalated, 202).

:data:`UNTRUSTED_KINDS` are the ground truth of the KPIs (:mod:`flk.sim.kpi`): what a
deployment must not accept; :data:`BAD_SIG_KINDS` must be answered 401.

PCS are derived from a few templates built by the real agent code
(:func:`flk.impl.agent.builder.build_pcs`): a new submission gets a fresh Merkle root
from the agent's stream, hence a fresh ``pcs_id``, and is signed with the
tenant's current key; the signals stay those the template computed, so the
verifier's recomputation accepts them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from flk.impl.agent import builder as agent_mod
from flk.impl.agent import factory
from flk.impl.agent.client import (
    Done,
    HttpAnswer,
    RetryPolicy,
    Send,
    Submission,
    TransportFailure,
    Wait,
)
from flk.impl.agent.factory import tenant_key
from flk.impl.agent.outbox import Outbox
from flk.impl.core.canonical import canonical_bytes
from flk.impl.testing.crashfs import CrashableMemoryFileSystem

from .metrics import BAD_SIG_KINDS


def make_templates(seed: int, count: int = 4) -> list[dict]:
    """Unsigned PCS templates computed by the real agent code from seeded point clouds."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        n = 400 + 200 * i
        if i % 2:
            pts = rng.random((n, 2))
        else:
            t = rng.random(n)
            pts = np.stack([t, 0.5 * t + 0.02 * rng.random(n)], axis=1)
        raw = pts.astype("<f8").tobytes()
        out.append(agent_mod.build_pcs(pts, raw, shard_id="sim-shard", epoch=1, signer=None, seed=seed + i))
    return out


UNTRUSTED_KINDS = (*BAD_SIG_KINDS, "conflict", "out_of_policy")


@dataclass
class PcsFactory:
    templates: list[dict]
    base_key: bytes
    key_generation: dict[str, int] = field(default_factory=dict)
    _keys: dict[tuple[str, int], bytes] = field(default_factory=dict, repr=False)  # derived keys, by generation

    def key_for(self, tenant: str) -> bytes:
        gen = self.key_generation.get(tenant, 0)
        key = self._keys.get((tenant, gen))
        if key is None:
            key = self._keys[(tenant, gen)] = tenant_key(self.base_key, tenant, gen)
        return key

    def new(self, rng, tenant: str, shard_id: str, epoch: int) -> dict:
        template = self.templates[rng.randrange(len(self.templates))]
        root = f"{rng.getrandbits(256):064x}"
        pcs = dict(template, sig_alg="hmac")
        return factory.with_identity(pcs, self.key_for(tenant), root=root, shard_id=shard_id, epoch=epoch)

    def conflicting(self, pcs: dict, tenant: str) -> dict:
        """Same pcs_id, another payload (coh-star nudged), validly signed."""
        return factory.other_payload(pcs, self.key_for(tenant), field="coh_star", delta=0.001)

    def resigned(self, pcs: dict, tenant: str) -> dict:
        """The same signed subset under the tenant's current key (what an agent does after a
        key rotation); identical to ``pcs`` when the key did not change."""
        return factory.sign(pcs, self.key_for(tenant))

    @staticmethod
    def bad_sig(pcs: dict) -> dict:
        return factory.bad_signature(pcs)

    @staticmethod
    def tampered(pcs: dict) -> dict:
        """Signed, then coh-star moved (the signature no longer covers the payload)."""
        out = dict(pcs)
        out["coh_star"] = round(pcs["coh_star"] - 0.01 if pcs["coh_star"] >= 0.01 else pcs["coh_star"] + 0.01, 9)
        return out

    def forged(self, pcs: dict, tenant: str) -> dict:
        """Re-signed with a key derived for another party (not any of the tenant's generations)."""
        return factory.sign(pcs, tenant_key(self.base_key, "attacker/" + tenant, 0))

    def out_of_policy(self, pcs: dict, tenant: str) -> dict:
        """A claimed D-hat 0.5 above what the counts give, validly signed."""
        return factory.sign(dict(pcs, D_hat=round(pcs["D_hat"] + 0.5, 9)), self.key_for(tenant))


def _expire(ev, _timer) -> None:
    """An attempt's timeout: wakes its waiter with None unless the answer came first."""
    if not ev.triggered:
        ev.succeed(None)


def payload_digest(pcs: dict) -> str:
    return hashlib.sha256(canonical_bytes(pcs)).hexdigest()


class Agent:
    """One simulated agent process."""

    def __init__(self, world, index: int) -> None:
        self.world = world
        self.index = index
        self.id = f"agent-{index}"
        w = world.scenario.data["workload"]
        self.w = w
        self.rng = world.streams.get(f"agent/{index}")
        self.tenant = f"t{index % int(w['tenants'])}"
        regions = world.region_ids
        home = w.get("home_region") or regions[index % len(regions)]
        self.urls = [home] + [r for r in regions if r != home]
        self.policy = RetryPolicy(base=w["backoff_base_ms"] / 1000.0, cap=w["backoff_cap_ms"] / 1000.0,
                                  max_attempts=int(w["max_attempts"]), max_retry_after=30.0)
        self.mailbox = world.net.register(self.id, group="clients", handler=self.on_message)
        h = world.history  # the per-attempt events, field order fixed (History.recorder)
        self._rec_send = h.recorder("client.send", ("req", "attempt", "agent", "tenant", "pcs_id", "digest", "kind",
                                                    "region"))
        self._rec_recv = h.recorder("client.recv", ("req", "attempt", "status", "replay", "body_sha", "region"))
        self.sent: list[dict] = []
        self.sent_at: list[float] = []  # simulated time each entry of ``sent`` was first sent
        self.pending: dict[tuple[int, int, int], object] = {}
        self.epoch = 1
        self.incarnation = 0
        self.up = True
        self.outbox: Outbox | None = None
        if w.get("outbox", False):
            self.fs = CrashableMemoryFileSystem(rng=world.streams.get(f"agent-disk/{index}"), torn_writes=True)
            self.fs.makedirs("/outbox")
            self.outbox = self._open_outbox()

    def _open_outbox(self) -> Outbox:
        # fsync per append ("always"): the simulated disk makes it instantaneous; no threads
        return Outbox("/outbox", fs=self.fs, durability="always", auto_compact_after=None)

    # -- crashes (only agents with an outbox keep anything) -------------------
    def crash(self) -> dict:
        self.incarnation += 1
        self.up = False
        self.pending.clear()
        lost = 0
        if self.outbox is not None:
            report = self.fs.crash()
            lost = len(report["torn"])
        return {"torn": lost}

    def restart(self):
        """Reopen the outbox from the disk and resubmit every pending record (at-least-once)."""
        self.up = True
        if self.outbox is None:
            return
        self.outbox = self._open_outbox()
        for seq, raw in self.outbox.pending():
            rec = json.loads(raw)
            self.world.history.record(self.world.env.now, "client.resubmit", req=rec["req"], agent=self.id, seq=seq)
            self.world.env.process(self.deliver(rec["req"], rec["kind"], rec["pcs"], seq))

    # -- arrivals ---------------------------------------------------------
    def rate_at(self, t: float) -> float:
        w = self.w
        base = float(w["rate_per_s"]) / float(w["agents"])
        if w["shape"] == "burst" and w["burst_at_s"] <= t < w["burst_at_s"] + w["burst_s"]:
            return base * float(w["burst_factor"])
        if w["shape"] == "diurnal":
            period = max(1.0, float(self.world.duration))
            return base * (1.0 + 0.8 * math.sin(2 * math.pi * t / period))
        return base

    def run(self):
        env = self.world.env
        while True:
            rate = self.rate_at(env.now)
            yield env.timeout(self.rng.expovariate(rate) if rate > 0 else 1.0)
            if env.now >= self.world.duration:
                return
            if rate > 0 and self.up:
                cap = self.world.max_submissions
                if cap is not None and self.world.submitted >= cap:
                    return
                self.world.submitted += 1
                env.process(self.submit_one())

    def choose(self) -> tuple[str, dict]:
        w, rng, f = self.w, self.rng, self.world.factory
        x = rng.random()
        if self.sent and x < w["dup_rate"]:
            return "dup", f.resigned(self.sent[rng.randrange(len(self.sent))], self.tenant)
        x -= w["dup_rate"]
        if x < w["bad_sig_rate"]:
            return "bad_sig", f.bad_sig(f.new(rng, self.tenant, f"s{self.index}", self.epoch))
        x -= w["bad_sig_rate"]
        if self.sent and x < w["conflict_rate"]:
            return "conflict", f.conflicting(self.sent[rng.randrange(len(self.sent))], self.tenant)
        x -= w["conflict_rate"]
        if x < w["cross_region_conflict_rate"]:
            picked = self._cross_region_pick()
            if picked is not None:
                return "conflict", f.conflicting(picked, self.tenant)
        untrusted = self._untrusted(x - w["cross_region_conflict_rate"])
        if untrusted is not None:
            return untrusted
        pcs = f.new(rng, self.tenant, f"s{self.index}", self.epoch)
        now = self.world.env.now
        if len(self.sent) < int(w["pool"]):
            self.sent.append(pcs)
            self.sent_at.append(now)
        else:
            slot = rng.randrange(len(self.sent))
            self.sent[slot], self.sent_at[slot] = pcs, now
        return "valid", pcs

    def _untrusted(self, x: float) -> tuple[str, dict] | None:
        """A tampered, forged or out-of-policy PCS for ``x`` in [0, their rates' sum)
        (no random draw unless one is chosen: runs without them are unchanged)."""
        w, f = self.w, self.world.factory
        for kind in ("tampered", "forged", "out_of_policy"):
            rate = w.get(f"{kind}_rate", 0.0)
            if 0.0 <= x < rate:
                pcs = f.new(self.rng, self.tenant, f"s{self.index}", self.epoch)
                made = f.tampered(pcs) if kind == "tampered" else getattr(f, kind)(pcs, self.tenant)
                return kind, made
            x -= rate
        return None

    def _cross_region_pick(self) -> dict | None:
        """A PCS an agent homed in another region sent at least ``cross_region_conflict_age_s``
        ago: with replication working, this region already knows it (a local 409); cut off,
        it does not (a cross-region conflict found after the heal)."""
        rng, age = self.rng, float(self.w["cross_region_conflict_age_s"])
        peers = [a for a in self.world.agents if a.tenant == self.tenant and a.urls[0] != self.urls[0] and a.sent]
        if not peers:
            return None
        peer = peers[rng.randrange(len(peers))]
        cutoff = self.world.env.now - age
        eligible = [i for i, t in enumerate(peer.sent_at) if t <= cutoff] if age > 0 else range(len(peer.sent))
        if not eligible:
            return None
        return peer.sent[eligible[rng.randrange(len(eligible))]]

    def submit_one(self):
        kind, pcs = self.choose()
        req = self.world.next_request_id()
        seq = None
        if self.outbox is not None:  # durable before the first send: survives an agent crash
            seq = self.outbox.append(json.dumps({"req": req, "kind": kind, "pcs": pcs}, sort_keys=True).encode())
        yield from self.deliver(req, kind, pcs, seq)

    def deliver(self, req: int, kind: str, pcs: dict, seq: int | None):
        world, env = self.world, self.world.env
        inc = self.incarnation
        router = world.router
        # behind the routing layer the client knows one name; the router picks the region per send
        urls = [self.urls[0]] if router is not None else self.urls
        sub = Submission(pcs, urls, rng=self.rng, policy=self.policy, tenant=self.tenant)
        digest = hashlib.sha256(sub.signed_bytes).hexdigest()  # == payload_digest(pcs): the same canonical bytes
        action = sub.start(world.clock())
        timeout = float(self.w["timeout_ms"]) / 1000.0
        while True:
            if isinstance(action, Send):
                target = router.resolve(self.urls) if router is not None else action.url
                self._rec_send(env.now, req, action.attempt, self.id, self.tenant, pcs["pcs_id"], digest, kind, target)
                ev = env.event()
                self.pending[(req, action.attempt, inc)] = ev
                world.net.send(self.id, target, "submit",
                               {"req": req, "attempt": action.attempt, "inc": inc, "body": action.body,
                                "tenant": self.tenant, "reply_to": self.id}, size=len(action.body))
                env.timeout(timeout).callbacks.append(partial(_expire, ev))
                msg = yield ev  # the answer, or None when the timeout came first
                if inc != self.incarnation:
                    return  # the agent crashed meanwhile; its outbox resubmits after restart
                self.pending.pop((req, action.attempt, inc), None)
                if msg is not None:
                    self._rec_recv(env.now, req, action.attempt, msg["status"], msg["replay"], msg["body_sha"], target)
                    result = HttpAnswer(msg["status"], msg.get("retry_after"))
                else:
                    world.history.record(env.now, "client.timeout", req=req, attempt=action.attempt, region=target)
                    result = TransportFailure("timeout")
                action = sub.on_result(result, world.clock())
            elif isinstance(action, Wait):
                yield env.timeout(action.delay)
                if inc != self.incarnation:
                    return
                action = sub.resume(world.clock())
            else:
                assert isinstance(action, Done)
                if action.outcome == "gave_up":
                    world.history.record(env.now, "client.give_up", req=req, reason=action.reason[:80])
                elif seq is not None and action.acked:
                    self.outbox.ack(seq)
                return

    def on_message(self, msg) -> None:
        """An answer arrived: it wakes the attempt waiting for it (if still waiting)."""
        ev = self.pending.get((msg.payload["req"], msg.payload["attempt"], msg.payload.get("inc", 0)))
        if ev is not None and not ev.triggered:
            ev.succeed(msg.payload)
