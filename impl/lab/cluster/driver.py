"""The scenario's workload in wall-clock time against real regions, recorded in the
simulator's history vocabulary.

Why this module exists: a cluster run must send what the simulated agents send
(same rates, tenants, agents per region, duplicate / bad-signature / conflict /
cross-region-conflict mix, seeded) so a figure of one can stand beside the other.
The choice of each submission is the simulator's own code
(:meth:`flk.sim.workload.Agent.choose`, ``rate_at`` and ``_cross_region_pick``, run
on a :class:`WallAgent` that offers the attributes they read), the PCS come from
the simulator's :class:`~flk.sim.workload.PcsFactory` and every submission goes
through the real retrying client state machine
(:class:`flk.impl.agent.client.Submission`) over the load generator's lean HTTP/1.1
keep-alive connections (:class:`flk.impl.agent.loadgen.Connection`: a heavier client
starves under CPU contention and turns its own slowness into timeouts). The arrival times
and answers are the wall clock's, so a run is not reproducible to the byte; the
choices are (same seed, same sequence of kinds per agent).

Events recorded (``flk.sim.checkers`` vocabulary, ``t_us`` from the run's start):
``client.send``, ``client.recv`` (status, ``replay`` from ``Idempotent-Replayed``;
the body is not kept), ``client.timeout`` (no answer: transport error or timeout, with
``error``), ``client.give_up``, ``client.skip`` (an arrival not sent: ``workload.max_in_flight``
submissions were open -- the simulator's agents skip at the same cap).

Behind the health-checked router (``router_url``; :mod:`.router`) an agent knows one name, as
in the simulator: every attempt goes to the router with the agent's home region in
``X-Flk-Home``, and the region the router chose (its ``X-Flk-Region`` answer header) is the
attempt's ``region``; its ``client.send`` is recorded at the time it was sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

from flk.impl.agent.client import (
    Done,
    HttpAnswer,
    RetryPolicy,
    Send,
    Submission,
    TransportFailure,
    Wait,
)
from flk.impl.agent.loadgen import Connection, HttpError, _request_head
from flk.impl.agent.outbox import Outbox
from flk.sim.region import SIM_EPOCH
from flk.sim.rng import Streams
from flk.sim.workload import (
    MAX_RETRY_AFTER_S,
    Agent,
    PcsFactory,
    make_templates,
    outbox_entry,
    outbox_record,
)
from flk.sim.world import BASE_KEY  # the simulator's tenants (not a secret)


class Clock:
    """Seconds since the run's start (monotonic), shared by agents, faults and samples."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    @property
    def now(self) -> float:
        return time.monotonic() - self.t0


class _World:
    """What :class:`flk.sim.workload.Agent`'s choice code reads from its world."""

    def __init__(self, clock: Clock, factory: PcsFactory, duration: float) -> None:
        self.env = clock
        self.factory = factory
        self.duration = duration
        self.agents: list[WallAgent] = []


class WallAgent:
    """One agent: the simulator's choice code, the real client, the wall clock."""

    choose = Agent.choose
    rate_at = Agent.rate_at
    _cross_region_pick = Agent._cross_region_pick
    _untrusted = Agent._untrusted  # tampered / forged / out-of-policy submissions, as the simulator draws them
    read_workload = Agent.read_workload

    def __init__(self, world: _World, index: int, w: dict, regions: list[str], streams: Streams) -> None:
        self.world, self.index, self.w = world, index, w
        self.id = f"agent-{index}"
        self.rng = streams.get(f"agent/{index}")
        self.tenant = f"t{index % int(w['tenants'])}"
        home = w.get("home_region") or regions[index % len(regions)]
        self.urls = [home] + [r for r in regions if r != home]
        self.policy = RetryPolicy(base=w["backoff_base_ms"] / 1000.0, cap=w["backoff_cap_ms"] / 1000.0,
                                  max_attempts=int(w["max_attempts"]), max_retry_after=MAX_RETRY_AFTER_S)
        self.sent: list[dict] = []
        self.sent_at: list[float] = []
        self.epoch = 1
        self.read_workload(w, index)


class Workload:
    """Runs every agent until ``duration`` and waits (bounded) for their submissions."""

    def __init__(self, scenario: dict, seed: int, regions: list[str], url_of, history, clock: Clock,
                 router_url: str | None = None, outbox_dir: Path | None = None) -> None:
        self.router_url = router_url
        self.w = scenario["workload"]
        self.duration = float(scenario["scenario"]["duration_s"])
        self.url_of, self.history, self.clock = url_of, history, clock
        self.streams = Streams(seed)
        self.world = _World(clock, PcsFactory(make_templates(seed), BASE_KEY), self.duration)
        self.agents = [WallAgent(self.world, i, self.w, regions, self.streams) for i in range(int(self.w["agents"]))]
        self.world.agents = self.agents
        self._req = 0
        self.in_flight: dict[int, str] = {}  # req -> region of its current attempt
        # the open submissions: a task from its arrival until its Done. workload.max_in_flight: one connection
        # per open submission; an arrival at the cap is skipped (``client.skip``), as the simulator's agents do
        self.tasks: set[asyncio.Task] = set()
        self.max_in_flight = int(self.w["max_in_flight"])
        self.idle: dict[str, list[Connection]] = {}  # region -> idle keep-alive connections
        self.heads: dict[tuple[str, tuple], bytes] = {}
        # workload.outbox: each agent's outbox is a real one on disk (fsync per append), appended
        # before the first send, acked at the answer; a record given up on is sent again after
        # workload.outbox_drain_s, and an agent_crash cancels the agent's deliveries and reopens
        # its outbox at the heal (every pending record resubmitted, as the simulator's agents do)
        self.outbox_dir = outbox_dir if self.w.get("outbox") else None
        self.outboxes: dict[str, Outbox] = {}
        self.down: set[str] = set()  # agents crashed and not restarted
        self.incarnation: dict[str, int] = {}
        self.agent_tasks: dict[str, set[asyncio.Task]] = {}
        if self.outbox_dir is not None:
            for a in self.agents:
                self.outboxes[a.id] = self._open_outbox(a.id)

    async def post(self, region: str, headers: tuple, body: bytes, timeout: float) -> tuple[int, dict]:
        if self.router_url is not None:
            region, headers = "router", (*headers, ("x-flk-home", region))
        url = (self.router_url if region == "router" else self.url_of(region)) + "/v1/pcs/submit"
        head = self.heads.get((region, headers))
        if head is None:
            head = self.heads[(region, headers)] = _request_head(url, headers)[1]
        pool = self.idle.setdefault(region, [])
        conn = pool.pop() if pool else None
        if conn is None:
            (host, port), _ = _request_head(url, headers)
            conn = Connection(host, port, timeout)
        status, resp_headers = await conn.post(head, body)
        if conn.writer is not None:
            pool.append(conn)
        return status, resp_headers

    def record(self, type_: str, t: float | None = None, **fields) -> None:
        self.history.record(self.clock.now if t is None else t, type_, **fields)

    def inflight_at(self, region: str) -> int:
        return sum(1 for r in self.in_flight.values() if r == region)

    async def run(self) -> None:
        await asyncio.gather(*(self._agent(a) for a in self.agents))

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the open deliveries, also those started meanwhile (an
        outbox's resubmissions), then cancel what is left and close the connections."""
        end = time.monotonic() + timeout
        while self.tasks and (left := end - time.monotonic()) > 0:
            await asyncio.wait(set(self.tasks), timeout=left)
        for t in list(self.tasks):
            t.cancel()
        for pool in self.idle.values():
            for conn in pool:
                conn.close()

    async def _agent(self, agent: WallAgent) -> None:
        next_at = 0.0
        while True:
            rate = agent.rate_at(next_at)
            next_at += agent.rng.expovariate(rate) if rate > 0 else 1.0
            delay = next_at - self.clock.now
            if delay > 0:
                await asyncio.sleep(delay)
            if next_at >= self.duration:
                return
            if rate <= 0:
                continue
            if agent.id in self.down:  # a crashed agent takes no arrivals
                continue
            if len(self.tasks) >= self.max_in_flight:
                self.record("client.skip", agent=agent.id)
                continue
            kind, pcs = agent.choose()
            self._req += 1
            seq = None
            outbox = self.outboxes.get(agent.id)
            if outbox is not None:  # durable before the first send: survives an agent crash
                seq = outbox.append(outbox_record(self._req, kind, pcs))
            self._start(agent, self._req, kind, pcs, seq)

    def _start(self, agent: WallAgent, req: int, kind: str, pcs: dict, seq: int | None) -> None:
        """A delivery of ``req`` as a task of ``agent``."""
        task = asyncio.create_task(self._deliver(agent, req, kind, pcs, seq))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        mine = self.agent_tasks.setdefault(agent.id, set())
        mine.add(task)
        task.add_done_callback(mine.discard)

    # -- outboxes and agent crashes ----------------------------------------------------------
    def _open_outbox(self, agent_id: str) -> Outbox:
        path = self.outbox_dir / agent_id
        path.mkdir(parents=True, exist_ok=True)
        return Outbox(str(path), durability="always", auto_compact_after=None)

    def crash_agent(self, agent_id: str) -> int:
        """agent_crash: its deliveries are cancelled (nothing more is recorded of them) and it takes
        no arrivals until :meth:`restart_agent`; its outbox stays on disk. Returns the deliveries cut."""
        self.incarnation[agent_id] = self.incarnation.get(agent_id, 0) + 1
        self.down.add(agent_id)
        cut = list(self.agent_tasks.get(agent_id, ()))
        for t in cut:
            t.cancel(msg="agent crash")
        outbox = self.outboxes.pop(agent_id, None)
        if outbox is not None:
            outbox.close()
        return len(cut)

    def restart_agent(self, agent_id: str) -> int:
        """The heal of an agent_crash: its outbox reopened from disk and every pending record
        resubmitted (``client.resubmit``) with the same signed bytes. Returns how many."""
        self.down.discard(agent_id)
        if self.outbox_dir is None:
            return 0
        outbox = self.outboxes[agent_id] = self._open_outbox(agent_id)
        agent = next(a for a in self.agents if a.id == agent_id)
        pending = outbox.pending()
        for seq, raw in pending:
            req, kind, pcs = outbox_entry(raw)
            self.record("client.resubmit", req=req, agent=agent_id, seq=seq)
            self._start(agent, req, kind, pcs, seq)
        return len(pending)

    def _redrain(self, agent: WallAgent, req: int, kind: str, pcs: dict, seq: int, inc: int) -> None:
        """The next drain after a give-up (a timer, not an open submission, while it waits, as in the
        simulator): a record still pending is sent again, unless the agent crashed meanwhile (its
        restart resubmits every pending record)."""
        outbox = self.outboxes.get(agent.id)
        if agent.id in self.down or inc != self.incarnation.get(agent.id, 0) or outbox is None or not outbox.holds(seq):
            return
        self.record("client.resubmit", req=req, agent=agent.id, seq=seq)
        self._start(agent, req, kind, pcs, seq)

    async def _deliver(self, agent: WallAgent, req: int, kind: str, pcs: dict, seq: int | None = None) -> None:
        inc = self.incarnation.get(agent.id, 0)
        routed = self.router_url is not None
        urls = agent.urls[:1] if routed else agent.urls  # behind the router: one name, the home
        sub = Submission(pcs, urls, rng=agent.rng, policy=agent.policy, tenant=agent.tenant)
        digest = hashlib.sha256(sub.signed_bytes).hexdigest()
        timeout = float(self.w["timeout_ms"]) / 1000.0
        action = sub.start(SIM_EPOCH + self.clock.now)
        unsent = None
        try:
            while True:
                if isinstance(action, Send):
                    region = action.url
                    sent = dict(req=req, attempt=action.attempt, agent=agent.id, tenant=agent.tenant,
                                pcs_id=pcs["pcs_id"], digest=digest, kind=kind)
                    sent_t = self.clock.now
                    unsent = (sent_t, sent, region) if routed else None  # recorded when the answer names the region
                    if not routed:
                        self.record("client.send", **sent, region=region)
                        self.in_flight[req] = region
                    try:
                        status, headers = await self.post(region, action.headers, action.body, timeout)
                    except (HttpError, OSError) as exc:
                        reason = str(exc)[:60] if isinstance(exc, HttpError) else type(exc).__name__
                        if routed:
                            unsent = None
                            self.record("client.send", t=sent_t, **sent, region=region)
                        self.record("client.timeout", req=req, attempt=action.attempt, region=region,
                                    error=reason)
                        result = TransportFailure(reason)
                    else:
                        if routed:
                            region, unsent = headers.get("x-flk-region", region), None
                            self.record("client.send", t=sent_t, **sent, region=region)
                        replay = headers.get("idempotent-replayed") is not None
                        self.record("client.recv", req=req, attempt=action.attempt, status=status,
                                    replay=replay, body_sha=None, region=region)
                        result = HttpAnswer(status, headers.get("retry-after"))
                    finally:
                        self.in_flight.pop(req, None)
                    action = sub.on_result(result, SIM_EPOCH + self.clock.now)
                elif isinstance(action, Wait):
                    await asyncio.sleep(action.delay)
                    action = sub.resume(SIM_EPOCH + self.clock.now)
                else:
                    assert isinstance(action, Done)
                    self._done(agent, req, kind, pcs, seq, inc, action)
                    return
        except asyncio.CancelledError:
            if unsent is not None:
                self.record("client.send", t=unsent[0], **unsent[1], region=unsent[2])
            if inc == self.incarnation.get(agent.id, 0):  # an agent crash records nothing more of it
                self.record("client.give_up", req=req, reason="run ended before an answer")
            raise

    def _done(self, agent: WallAgent, req: int, kind: str, pcs: dict, seq: int | None, inc: int,
              action: Done) -> None:
        outbox = self.outboxes.get(agent.id)
        if action.outcome == "gave_up":
            self.record("client.give_up", req=req, reason=action.reason[:80])
            if seq is not None and outbox is not None:  # still pending: the next drain sends it again
                asyncio.get_running_loop().call_later(float(self.w["outbox_drain_s"]), self._redrain, agent, req,
                                                      kind, pcs, seq, inc)
        elif seq is not None and outbox is not None and action.acked:
            outbox.ack(seq)
