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
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from heapq import heappush
from json.encoder import encode_basestring

import numpy as np
from simpy.events import NORMAL, URGENT

from flk.impl.agent import builder as agent_mod
from flk.impl.agent import factory
from flk.impl.agent.client import (
    UNSIGNED_FIELDS,
    Done,
    HttpAnswer,
    Prepared,
    RetryPolicy,
    Send,
    Submission,
    TransportFailure,
    Wait,
    compact_json,
    prepare,
)
from flk.impl.agent.factory import tenant_key
from flk.impl.agent.outbox import Outbox
from flk.impl.core import accel
from flk.impl.core.canonical import canonical_bytes
from flk.impl.core.pcs import check_epoch, check_shard_id, pcs_id_of_checked
from flk.impl.core.signing import pure_hmac_b64, sign_hmac
from flk.impl.testing.crashfs import CrashableMemoryFileSystem

from ..impl.core import textdata
from .metrics import BAD_SIG_KINDS
from .net import Wakeup, call_at, call_later

_hmac_b64 = accel.bind("hmac_sha256_b64", globals(), "_hmac_b64", pure_hmac_b64)  # sign_hmac's HMAC


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
IDENTITY_FIELDS = ("pcs_id", "shard_id", "epoch", "merkle_root", "sig")  # what PcsFactory.new changes
_MADE_KEPT = 1 << 14  # at most this many PCS kept by PcsFactory.fixed (the agents' pools; forget drops the others)
MAX_RETRY_AFTER_S = 30.0  # the simulated agents' cap on a server's Retry-After (RetryPolicy.max_retry_after)


class _BodySkeleton:
    """The request body prefix (:class:`Prepared`'s ``head``) of PCS made from one template:
    the compact JSON of every template field, encoded once, with holes for the identity
    fields that differ per PCS (in the dict's key order: the template's, then ``sig``)."""

    __slots__ = ("parts", "holes", "fmt")

    def __init__(self, base: dict) -> None:
        keys = [k for k in base if k not in UNSIGNED_FIELDS]
        if "sig" not in base:
            keys.append("sig")
        self.parts: list[str] = []  # constant text before each hole, then the tail
        self.holes: list[str] = []
        text = "{"
        for i, key in enumerate(keys):
            text += ("," if i else "") + encode_basestring(key) + ":"
            if key in IDENTITY_FIELDS:
                self.parts.append(text)
                self.holes.append(key)
                text = ""
            else:
                text += compact_json(base[key])
        self.parts.append(text + ',"attempt":')
        # the same text as one %-format over the PCS itself, for a PCS made by PcsFactory.new:
        # its pcs_id and merkle_root are hex, its sig base64, its shard_id matched
        # [A-Za-z0-9._:-]+ (check_shard_id) -- strings JSON writes as they are, between quotes --
        # and its epoch is an int
        fmt = [self.parts[0].replace("%", "%%")]
        for key, part in zip(self.holes, self.parts[1:], strict=True):
            fmt.append(f"%({key})d" if key == "epoch" else f'"%({key})s"')
            fmt.append(part.replace("%", "%%"))
        self.fmt = "".join(fmt)

    def prepared(self, pcs: dict) -> Prepared:
        parts, out = self.parts, []
        for i, key in enumerate(self.holes):
            value = pcs[key]
            out.append(parts[i])
            kind = value.__class__
            out.append(encode_basestring(value) if kind is str else int.__repr__(value) if kind is int else
                       compact_json(value))
        out.append(parts[-1])
        return Prepared(pcs["pcs_id"], canonical_bytes(pcs), "".join(out).encode("utf-8"))


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

    def __post_init__(self) -> None:
        self._bodies = [_BodySkeleton(dict(t, sig_alg="hmac")) for t in self.templates]
        self._profiles = [factory.profile_of(t) for t in self.templates]  # new() keeps the version
        # the PCS new() made last, its skeleton, whether the skeleton's format applies to it
        self._last: tuple[dict, _BodySkeleton, bool, bytes, bytes | None] | None = None
        self._checked: set[tuple[str, int]] = set()  # (shard_id, epoch) pairs that passed the pcs_id checks
        # PCS new() made, by identity (the entry holds the PCS: its id is not reused meanwhile): the key
        # that signed it, its Prepared and payload digest (:meth:`fixed`), so a duplicate -- a pool
        # member resent, :meth:`resigned` -- is neither signed nor encoded again; dropped when it
        # leaves its agent's pool (:meth:`forget`), all of them past :data:`_MADE_KEPT`
        self._made: dict[int, tuple[dict, bytes, Prepared, str]] = {}

    def new(self, rng, tenant: str, shard_id: str, epoch: int) -> dict:
        i = rng.randrange(len(self.templates))
        root = f"{rng.getrandbits(256):064x}"
        pcs = dict(self.templates[i], sig_alg="hmac")
        # factory.with_identity's document (tests/sim/test_fast_paths.py), its checks once per
        # (shard_id, epoch): the root is 64 hex digits by construction
        if (shard_id, epoch) not in self._checked:
            check_epoch(epoch)
            check_shard_id(shard_id)
            self._checked.add((shard_id, epoch))
        pcs["merkle_root"], pcs["shard_id"], pcs["epoch"] = root, shard_id, epoch
        pcs["pcs_id"] = pcs_id_of_checked(root, epoch, shard_id)
        # factory.sign's signature, set in place: ``pcs`` is already this call's own copy (the
        # signed subset's canonical bytes ignore the other fields: no subset dict either)
        key = self.key_for(tenant)
        profile = self._profiles[i]  # factory.profile_of(pcs): the template's version
        signed = canonical_bytes(pcs, profile)
        # sign_hmac(pcs, key, profile) from the bytes it would make: kept for prepared() (its
        # signed bytes, the "v1" profile's) -- the subset is encoded once per new PCS
        pcs["sig"] = _hmac_b64(key, signed) if key.__class__ is bytes and key else sign_hmac(pcs, key, profile)
        # the skeleton's format applies when the checked shard_id and epoch are exactly str and int
        self._last = (pcs, self._bodies[i], shard_id.__class__ is str and epoch.__class__ is int, key,
                      signed if profile == "v1" else None)
        return pcs

    def fixed(self, pcs: dict) -> tuple[Prepared, str]:
        """``(client.prepare(pcs), payload_digest(pcs))``. For the PCS :meth:`new` made last
        (unchanged: the simulator never edits a PCS it made) the body comes from its template's
        skeleton, without encoding the template's fields again, and both are kept in
        :data:`_made` for its duplicates (tests/sim/test_fast_paths.py: the same bytes)."""
        made = self._made.get(id(pcs))
        if made is not None and made[0] is pcs:
            return made[2], made[3]
        last = self._last
        if last is None or last[0] is not pcs:
            prepared = prepare(pcs)
            return prepared, hashlib.sha256(prepared.signed_bytes).hexdigest()
        self._last = None
        if last[2] and last[4] is not None:
            prepared = Prepared(pcs["pcs_id"], last[4], (last[1].fmt % pcs).encode("utf-8"))
        else:
            prepared = last[1].prepared(pcs)
        digest = hashlib.sha256(prepared.signed_bytes).hexdigest()
        kept = self._made
        if len(kept) >= _MADE_KEPT:  # not in the simulator (forget keeps the pools' PCS): a bound
            kept.clear()
        kept[id(pcs)] = (pcs, last[3], prepared, digest)
        return prepared, digest

    def prepared(self, pcs: dict) -> Prepared:
        """``client.prepare(pcs)`` (:meth:`fixed`'s)."""
        return self.fixed(pcs)[0]

    def forget(self, pcs: dict) -> None:
        """``pcs`` will not be sent again: :meth:`fixed` need not keep it."""
        self._made.pop(id(pcs), None)  # an entry at its id is its own (the entry holds its PCS)

    def conflicting(self, pcs: dict, tenant: str) -> dict:
        """Same pcs_id, another payload (coh-star nudged), validly signed."""
        return factory.other_payload(pcs, self.key_for(tenant), field="coh_star", delta=0.001)

    def resigned(self, pcs: dict, tenant: str) -> dict:
        """The same signed subset under the tenant's current key (what an agent does after a
        key rotation); ``pcs`` itself when it is a PCS :meth:`new` made that this key signed (kept
        in :data:`_made`: the signature would be the same), else ``factory.sign``'s copy."""
        key = self.key_for(tenant)
        made = self._made.get(id(pcs))
        if made is not None and made[0] is pcs and made[1] == key:
            return pcs
        return factory.sign(pcs, key)

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


def payload_digest(pcs: dict) -> str:
    return hashlib.sha256(canonical_bytes(pcs)).hexdigest()


def outbox_record(req: int, kind: str, pcs: dict) -> bytes:
    """What an agent appends to its outbox for one request (the simulator's agents and the
    cluster runner's): its id, its kind and the PCS, so a resubmission sends the same PCS."""
    return json.dumps({"req": req, "kind": kind, "pcs": pcs}, sort_keys=True).encode()


def outbox_entry(raw: bytes) -> tuple[int, str, dict]:
    """(req, kind, pcs) of an :func:`outbox_record`."""
    rec = textdata.json_loads(raw)
    return rec["req"], rec["kind"], rec["pcs"]


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
                                  max_attempts=int(w["max_attempts"]), max_retry_after=MAX_RETRY_AFTER_S)
        self.mailbox = world.net.register(self.id, group="clients", handler=self.on_message)
        self.attempt_timeout = float(w["timeout_ms"]) / 1000.0  # an attempt's answer timeout, seconds
        self.read_workload(w, index)
        self._rate = 0.0  # the arrival rate the pending arrival was drawn at
        h = world.history  # the per-attempt events, field order fixed (History.recorder)
        self._rec_send = h.recorder("client.send", ("req", "attempt", "agent", "tenant", "pcs_id", "digest", "kind",
                                                    "region"))
        self._rec_recv = h.recorder("client.recv", ("req", "attempt", "status", "replay", "body_sha", "region"))
        self.sent: list[dict] = []
        self.sent_at: list[float] = []  # simulated time each entry of ``sent`` was first sent
        self.pending: dict[tuple[int, int, int], object] = {}
        # attempts' answer deadlines in send order (deadline, event id, delivery, attempt): one
        # armed timer for the first still waiting (:meth:`expire_later`)
        self._deadlines: deque = deque()
        self._armed = False
        # the callbacks of this agent's re-queued timers: tuples (SimPy only iterates an event's
        # callbacks; nothing can append to a timer no process waits on)
        self._on_arrival = (self._arrival,)
        self._on_deadline = (self._deadline,)
        self.epoch = 1
        self.incarnation = 0
        self.up = True
        self.open = 0  # its submissions started and not done (World.open_submissions counts all agents')
        self.outbox: Outbox | None = None
        self.drain_s = float(w["outbox_drain_s"])  # the schema holds its default
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
        self.world.open_submissions -= self.open  # its deliveries died with it (none reaches Done)
        self.open = 0
        lost = 0
        if self.outbox is not None:
            report = self.fs.crash()
            lost = len(report["torn"])
        return {"torn": lost}

    def redrain(self, req: int, kind: str, pcs: dict, seq: int, inc: int, _event=None) -> None:
        """The drain after a give-up: a record still pending in the outbox is sent again (the same
        signed bytes: at-least-once), unless the agent crashed meanwhile (its restart resubmits
        every pending record) or the record was acked since."""
        if inc != self.incarnation or not self.up or self.outbox is None:
            return
        if not self.outbox.holds(seq):
            return
        self.world.history.record(self.world.env.now, "client.resubmit", req=req, agent=self.id, seq=seq)
        Delivery(self, req, kind, pcs, seq).start()

    def restart(self):
        """Reopen the outbox from the disk and resubmit every pending record (at-least-once)."""
        self.up = True
        if self.outbox is None:
            return
        self.outbox = self._open_outbox()
        for seq, raw in self.outbox.pending():
            req, kind, pcs = outbox_entry(raw)
            self.world.history.record(self.world.env.now, "client.resubmit", req=req, agent=self.id, seq=seq)
            self.deliver_later(req, kind, pcs, seq)

    # -- arrivals ---------------------------------------------------------
    def rate_at(self, t: float) -> float:
        shape, base = self._shape
        if shape == "burst":
            w = self.w
            if w["burst_at_s"] <= t < w["burst_at_s"] + w["burst_s"]:
                return base * float(w["burst_factor"])
        elif shape == "diurnal":
            period = max(1.0, float(self.world.duration))
            return base * (1.0 + 0.8 * math.sin(2 * math.pi * t / period))
        return base

    def start(self) -> None:
        """Start the arrival loop where a SimPy process started now would begin (its
        initialising event: urgent, at the current time), without a process: each arrival is
        a timeout whose callback (:meth:`_arrival`) draws the next one, then submits."""
        env = self.world.env
        ev = env.event()
        ev._ok, ev._value = True, None
        ev.callbacks.append(self._begin)
        env.schedule(ev, URGENT)

    def _begin(self, _event=None) -> None:
        env = self.world.env
        rate = self._rate = self.rate_at(env._now)
        call_later(env, self.rng.expovariate(rate) if rate > 0 else 1.0, self._arrival)

    def _arrival(self, timer) -> None:
        """One arrival (a timeout's callback): the next arrival is drawn, then a submission
        starts in the same step (:meth:`submit`; no process of its own). The next arrival's
        queue entry is the timer that just fired, queued again (``call_later``'s entry: the
        agent has one arrival pending at a time)."""
        world = self.world
        env = world.env
        now = env._now
        if now >= world.duration:
            return
        start = False
        if self._rate > 0 and self.up:
            cap = world.max_submissions
            if cap is not None and world.submitted >= cap:
                return
            if world.open_submissions >= world.max_in_flight:  # the load generator's cap: skipped, not sent
                world.history.record(env.now, "client.skip", agent=self.id)
            else:
                world.submitted += 1
                start = True
        rate = self._rate = self._flat_rate if self._flat_rate is not None else self.rate_at(now)
        delay = self.rng.expovariate(rate) if rate > 0 else 1.0  # >= 0: call_later's check cannot fail
        if timer.__class__ is Wakeup:  # fired: SimPy took its callbacks (None) and holds it no more
            timer.callbacks = self._on_arrival
            heappush(env._queue, (now + delay, NORMAL, next(env._eid), timer))
        else:
            call_later(env, delay, self._arrival)
        if start:
            self.submit()

    def read_workload(self, w: dict, index: int) -> None:
        """The workload fields :meth:`choose` reads, set once (a scenario's data does not change
        during a run); the cluster runner's agent (:class:`flk.impl.lab.cluster.driver.WallAgent`)
        borrows ``choose`` and sets its fields through this same method."""
        self.shard = f"s{index}"
        self._shape = (w["shape"], float(w["rate_per_s"]) / float(w["agents"]))  # what rate_at reads per arrival
        self._flat_rate = None if w["shape"] in ("burst", "diurnal") else self._shape[1]  # rate_at's, at any time
        self._choice_rates = (w["dup_rate"], w["bad_sig_rate"], w["conflict_rate"], w["cross_region_conflict_rate"])
        self._untrusted_rates = tuple((kind, w.get(f"{kind}_rate", 0.0)) for kind in ("tampered", "forged",
                                                                                       "out_of_policy"))
        if not any(rate for _, rate in self._untrusted_rates):
            self._untrusted_rates = ()  # none can be chosen: choose skips the draw-free loop
        self._pool = int(w["pool"])

    def choose(self) -> tuple[str, dict]:
        rng, f, sent = self.rng, self.world.factory, self.sent
        dup, bad_sig, conflict, cross = self._choice_rates
        x = rng.random()
        if sent and x < dup:
            return "dup", f.resigned(sent[rng.randrange(len(sent))], self.tenant)
        x -= dup
        if x < bad_sig:
            return "bad_sig", f.bad_sig(f.new(rng, self.tenant, self.shard, self.epoch))
        x -= bad_sig
        if sent and x < conflict:
            return "conflict", f.conflicting(sent[rng.randrange(len(sent))], self.tenant)
        x -= conflict
        if x < cross:
            picked = self._cross_region_pick()
            if picked is not None:
                return "conflict", f.conflicting(picked, self.tenant)
        if self._untrusted_rates:  # (no kind with a rate: _untrusted never chooses one)
            untrusted = self._untrusted(x - cross)
            if untrusted is not None:
                return untrusted
        pcs = f.new(rng, self.tenant, self.shard, self.epoch)
        now = self.world.env.now
        if len(sent) < self._pool:
            sent.append(pcs)
            self.sent_at.append(now)
        else:
            slot = rng.randrange(len(sent))
            f.forget(sent[slot])  # out of the pool: never resent
            sent[slot], self.sent_at[slot] = pcs, now
        return "valid", pcs

    def _untrusted(self, x: float) -> tuple[str, dict] | None:
        """A tampered, forged or out-of-policy PCS for ``x`` in [0, their rates' sum)
        (no random draw unless one is chosen: runs without them are unchanged)."""
        for kind, rate in self._untrusted_rates:
            if 0.0 <= x < rate:
                f = self.world.factory
                pcs = f.new(self.rng, self.tenant, self.shard, self.epoch)
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

    def submit(self) -> None:
        """One new logical request: choose it, make it durable in the outbox (if any), send it."""
        kind, pcs = self.choose()
        req = self.world.next_request_id()
        seq = None
        if self.outbox is not None:  # durable before the first send: survives an agent crash
            seq = self.outbox.append(outbox_record(req, kind, pcs))
        Delivery(self, req, kind, pcs, seq).start()

    def deliver_later(self, req: int, kind: str, pcs: dict, seq: int | None) -> None:
        """Start a delivery in an urgent event at the current time: where a started SimPy
        process would have begun (restarts and scheduled operations)."""
        env = self.world.env
        ev = env.event()
        ev._ok, ev._value = True, None
        ev.callbacks.append(lambda _ev: Delivery(self, req, kind, pcs, seq).start())
        env.schedule(ev, URGENT)

    def expire_later(self, delivery: Delivery, attempt: int) -> None:
        """``attempt``'s answer timeout: :meth:`Delivery._expired` at ``now + attempt_timeout``, in
        the place of the event queue a ``timeout(attempt_timeout)`` made now would take.

        Deadlines of one agent come in send order (one constant timeout), so they wait in a FIFO
        with ONE armed timer, for the first attempt still waiting; an attempt answered before its
        deadline (nearly all) never becomes a SimPy event. Each deadline keeps the event id its
        own timeout would have drawn now (drawn here), and a timer is queued at exactly
        ``(deadline, NORMAL, that id)``: SimPy orders its queue by those three, so every expiry
        runs at the same step as with one timeout per attempt (the same history)."""
        env = self.world.env
        deadline = env._now + self.attempt_timeout  # Timeout's own sum: now + delay
        eid = next(env._eid)
        self._deadlines.append((deadline, eid, delivery, attempt))
        if not self._armed:
            self._arm(deadline, eid)

    def _arm(self, deadline: float, eid: int) -> None:
        call_at(self.world.env, deadline, eid, self._deadline)
        self._armed = True

    def _deadline(self, timer) -> None:
        """The armed deadline (the FIFO's first): expire it if still waiting, then arm the next
        attempt still waiting (an answered or dead attempt stays answered or dead: dropped) --
        ``timer``, the one that fired, queued again (``call_at``'s entry)."""
        q = self._deadlines
        _, _, delivery, attempt = q.popleft()
        delivery._expired(attempt, None)
        incarnation = self.incarnation
        while q:
            deadline, eid, waiting, att = q[0]
            if waiting.attempt == att and waiting.inc == incarnation:
                timer.callbacks = self._on_deadline  # fired: SimPy holds it no more
                heappush(self.world.env._queue, (deadline, NORMAL, eid, timer))
                return
            q.popleft()
        self._armed = False

    def on_message(self, msg) -> None:
        """An answer (or a refused or reset connection) arrived: it goes to the attempt waiting
        for it (if still waiting)."""
        p = msg.payload
        delivery = self.pending.pop((p["req"], p["attempt"], p.get("inc", 0)), None)
        if delivery is not None:
            if msg.kind == "refused":
                delivery.failed(p["error"])
            else:
                delivery.answered(p)


class Delivery:
    """One logical request through the real retrying client (:class:`Submission`), driven by
    callbacks in simulated time: an attempt waits in the agent's ``pending`` for its answer
    (:meth:`Agent.on_message`) or its timeout, whichever comes first; a backoff is one
    timeout. No SimPy process, no event per answer, and no event per attempt timeout that
    does not expire (:meth:`Agent.expire_later`)."""

    __slots__ = ("agent", "req", "kind", "pcs", "seq", "inc", "sub", "digest", "target", "attempt")

    def __init__(self, agent: Agent, req: int, kind: str, pcs: dict, seq: int | None) -> None:
        self.agent, self.req, self.kind, self.pcs, self.seq = agent, req, kind, pcs, seq
        self.inc = agent.incarnation
        world = agent.world
        # behind the routing layer the client knows one name; the router picks the region per send
        urls = [agent.urls[0]] if world.router is not None else agent.urls
        prepared, self.digest = world.factory.fixed(pcs)  # digest == payload_digest(pcs)
        self.sub = Submission(prepared, urls, rng=agent.rng, policy=agent.policy, tenant=agent.tenant)
        self.target = None
        self.attempt = 0  # the attempt waiting for its answer (0: none)

    def start(self) -> None:
        agent = self.agent
        agent.open += 1
        agent.world.open_submissions += 1
        self._act(self.sub.start(agent.world.clock()))

    def _act(self, action) -> None:
        agent = self.agent
        world = agent.world
        env = world.env
        kind = action.__class__
        if kind is Send or isinstance(action, Send):  # the exact class first: no isinstance per send
            router = world.router
            target = self.target = router.resolve(agent.urls) if router is not None else action.url
            attempt = self.attempt = action.attempt
            agent._rec_send(env._now, self.req, attempt, agent.id, agent.tenant, self.pcs["pcs_id"], self.digest,
                            self.kind, target)
            agent.pending[(self.req, attempt, self.inc)] = self
            world.net.send(agent.id, target, "submit",
                           {"req": self.req, "attempt": attempt, "inc": self.inc, "body": action.body,
                            "tenant": agent.tenant, "reply_to": agent.id}, size=len(action.body))
            agent.expire_later(self, attempt)
        elif kind is Wait or isinstance(action, Wait):
            call_later(env, action.delay, self._waited)
        else:
            assert isinstance(action, Done)
            agent.open -= 1
            world.open_submissions -= 1
            if action.outcome == "gave_up":
                world.history.record(env.now, "client.give_up", req=self.req, reason=action.reason[:80])
                if self.seq is not None:  # still pending in the outbox: the next drain sends it again
                    call_later(env, agent.drain_s, partial(agent.redrain, self.req, self.kind, self.pcs, self.seq,
                                                           self.inc))
            elif self.seq is not None and action.acked:
                agent.outbox.ack(self.seq)

    def answered(self, msg: dict) -> None:
        """The waiting attempt's answer (the agent took it out of ``pending``)."""
        agent = self.agent
        if self.inc != agent.incarnation:
            return
        attempt, self.attempt = self.attempt, 0
        world = agent.world
        agent._rec_recv(world.env._now, self.req, attempt, msg["status"], msg["replay"], msg["body_sha"], self.target)
        self._act(self.sub.on_result(HttpAnswer(msg["status"], msg.get("retry_after")), world.clock()))

    def failed(self, error: str) -> None:
        """The waiting attempt's connection was refused or reset (its region's process is dead):
        a transport failure now, recorded as the cluster runner records one (``client.timeout``
        with the error), not after the answer timeout."""
        agent = self.agent
        if self.inc != agent.incarnation:
            return
        attempt, self.attempt = self.attempt, 0
        world = agent.world
        world.history.record(world.env.now, "client.timeout", req=self.req, attempt=attempt, region=self.target,
                             error=error)
        self._act(self.sub.on_result(TransportFailure(error), world.clock()))

    def _expired(self, attempt: int, _timer) -> None:
        """An attempt's timeout: a transport failure unless its answer came first."""
        agent = self.agent
        if self.attempt != attempt or self.inc != agent.incarnation:
            return
        self.attempt = 0
        agent.pending.pop((self.req, attempt, self.inc), None)
        world = agent.world
        world.history.record(world.env.now, "client.timeout", req=self.req, attempt=attempt, region=self.target)
        self._act(self.sub.on_result(TransportFailure("timeout"), world.clock()))

    def _waited(self, _timer) -> None:
        if self.inc != self.agent.incarnation:
            return
        self._act(self.sub.resume(self.agent.world.clock()))
