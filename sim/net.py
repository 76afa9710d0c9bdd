"""Simulated network: a topology graph whose links have latency distributions,
loss, duplication, reordering and a bandwidth limit; partitions (symmetric or
asymmetric, between any node sets) cut the graph's edge boundary.

A message is one SimPy queue entry (:func:`call_later`: a timeout without the Timeout)
whose callback hands it to the destination's handler after the sampled delay (no process, no store per message); a node
registered without a handler gets a mailbox (a SimPy store) instead. Every drop is recorded in the history with its reason
so "sometimes" checks can prove a partition really cut traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from heapq import heappush

import networkx as nx
import simpy
from simpy.events import NORMAL

from .history import History
from .rng import sampler

_ONE_COPY, _TWO_COPIES = (0,), (0, 1)  # Network.send's copies of a message (a duplicate: two)


class Wakeup:
    """A timeout reduced to what :meth:`simpy.Environment.step` reads of an event: its callbacks
    and ``_ok`` (no process waits on it; its callbacks ignore the event)."""

    __slots__ = ("callbacks", "_ok", "_value")


def call_at(env: simpy.Environment, when: float, eid: int, callback: Callable) -> None:
    """``callback(event)`` at simulated time ``when`` in the queue place ``(when, NORMAL, eid)``."""
    ev = Wakeup()
    ev.callbacks, ev._ok, ev._value = [callback], True, None
    heappush(env._queue, (when, NORMAL, eid, ev))


def call_later(env: simpy.Environment, delay: float, callback: Callable) -> None:
    """``env.timeout(delay).callbacks.append(callback)`` without the Timeout: the same queue
    entry (``(now + delay, NORMAL, next event id)``, so the same order of every step) and the
    same refusal of a negative delay, in one call instead of three."""
    if delay < 0:
        raise ValueError(f"Negative delay {delay}")
    call_at(env, env._now + delay, next(env._eid), callback)


@dataclass
class LinkSpec:
    latency_ms: Mapping | float = 1.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0          # probability of an extra delay that reorders a message
    reorder_extra_ms: float = 20.0
    bandwidth_bytes_per_s: float | None = None


@dataclass(slots=True)
class Message:
    src: str
    dst: str
    kind: str
    payload: object
    size: int = 256
    msg_id: int = 0
    # what :meth:`simpy.Environment.step` reads of an event (as :class:`Wakeup`): a message in
    # flight is its own queue entry (:meth:`Network.send` sets them; unset on a message never queued)
    callbacks: tuple | None = field(init=False, repr=False, compare=False)
    _ok: bool = field(init=False, repr=False, compare=False)


class Inbox:
    """A handler-served node's mailbox: ``put(msg)`` hands the message over at once."""

    def __init__(self, env: simpy.Environment, handler: Callable[[Message], None]) -> None:
        self.env, self.handler = env, handler

    def put(self, msg: Message) -> simpy.Event:
        self.handler(msg)
        done = self.env.event()
        done.succeed()
        return done


@dataclass
class _LinkState:
    free_at: float = 0.0
    sent: int = 0
    dropped: int = 0


@dataclass
class Network:
    """Message delivery over a topology graph (:mod:`flk.sim.topology`).

    Every node that sends or receives (an agent, a region process, an object store) belongs
    to a *group*: a node of the graph. A message from group ``u`` to group ``v`` travels the
    graph's shortest path; each hop's :class:`LinkSpec` adds latency (and bandwidth queueing)
    and may lose, duplicate or reorder it; a hop cut by a partition drops it.
    """

    env: simpy.Environment
    history: History
    rng_for: Callable[[str], object]
    default: LinkSpec = field(default_factory=LinkSpec)
    graph: nx.Graph | None = None
    groups: dict[str, str] = field(default_factory=dict)  # node -> group (a graph node)
    record_sends: bool = False

    def __post_init__(self) -> None:
        if self.graph is None:
            self.graph = nx.Graph()
        self.mailboxes: dict[str, simpy.Store | Inbox] = {}
        self.handlers: dict[str, Callable[[Message], None]] = {}
        self._routes: dict[tuple[str, str], tuple] = {}  # (src group, dst group) -> hops, specs, rng
        self._sends: dict[tuple[str, str], tuple] = {}  # (src node, dst node) -> its route and link state
        self.blocked: set[tuple[str, str]] = set()  # directed graph edges cut by partitions
        self.down: set[str] = set()
        # node -> what its host does with a message for its dead process (a region's refuses a
        # request: the kernel answers a connect to a closed port with a reset at once)
        self.on_down: dict[str, Callable[[Message], None]] = {}
        self._state: dict[tuple[str, str], _LinkState] = {}
        self._paths: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._next_id = 0
        self.drops_by_reason: dict[str, int] = {}
        # a message in flight's callbacks: _arrive(msg) (the message is the event); one tuple for
        # all (SimPy only iterates an event's callbacks; no process waits on a message)
        self._on_arrive = (self._arrive,)

    # -- topology -------------------------------------------------------
    def register(self, node: str, group: str | None = None,
                 handler: Callable[[Message], None] | None = None) -> simpy.Store | Inbox:
        """A node of ``group``: messages go to ``handler(msg)`` when given, else into a SimPy store."""
        box = simpy.Store(self.env) if handler is None else Inbox(self.env, handler)
        if handler is not None:
            self.handlers[node] = handler
        self.mailboxes[node] = box
        self.groups[node] = group or node
        self._sends.clear()  # a node's group may have been taken as its name before
        return box

    def group(self, node: str) -> str:
        return self.groups.get(node, node)

    def hops(self, src_group: str, dst_group: str) -> list[tuple[str, str]]:
        """The directed links a message from ``src_group`` to ``dst_group`` crosses."""
        key = (src_group, dst_group)
        if key not in self._paths:
            if src_group == dst_group or src_group not in self.graph or dst_group not in self.graph:
                self._paths[key] = [key]
            else:
                try:
                    path = nx.shortest_path(self.graph, src_group, dst_group)
                except nx.NetworkXNoPath:
                    path = [src_group, dst_group]
                self._paths[key] = list(zip(path, path[1:], strict=False))
        return self._paths[key]

    def link(self, u: str, v: str) -> LinkSpec:
        if self.graph.has_edge(u, v):
            return self.graph.edges[u, v]["spec"]
        return self.default

    def spec(self, src: str, dst: str) -> LinkSpec:
        """The link between two nodes' groups (the first hop)."""
        return self.link(*self.hops(self.group(src), self.group(dst))[0])

    # -- faults ---------------------------------------------------------
    def side(self, names: list[str]) -> set[str]:
        """Graph nodes on one side of a partition: the named nodes and what hangs off them."""
        out = set(names)
        for node, data in self.graph.nodes(data=True):
            if data.get("region") in names:
                out.add(node)
        return out

    def cut(self, a: list[str], b: list[str], symmetric: bool = True) -> list[tuple[str, str]]:
        """The directed links a partition between node sets ``a`` and ``b`` cuts (an edge
        boundary of the graph); groups absent from the graph are cut pairwise."""
        side_a, side_b = self.side(a), self.side(b)
        edges = list(nx.edge_boundary(self.graph, side_a, side_b)) if self.graph.number_of_nodes() else []
        edges += [(x, y) for x in a for y in b if x not in self.graph or y not in self.graph]
        out = []
        for x, y in edges:
            out.append((x, y))
            if symmetric:
                out.append((y, x))
        return out

    def partition(self, a: list[str], b: list[str], symmetric: bool = True) -> None:
        self.blocked.update(self.cut(a, b, symmetric))

    def heal(self, a: list[str] | None = None, b: list[str] | None = None) -> None:
        if a is None:
            self.blocked.clear()
            return
        for edge in self.cut(a, b or [], symmetric=True):
            self.blocked.discard(edge)

    def is_blocked(self, src: str, dst: str) -> bool:
        if not self.blocked:
            return False
        return any(hop in self.blocked for hop in self.hops(self.group(src), self.group(dst)))

    def _route(self, gs: str, gd: str) -> tuple:
        """Hops, their link specs (fixed by the topology), the pair's random stream, and what
        a send needs of the specs read once: the hops' loss and duplicate probabilities (the
        nonzero ones, in hop order) and, when no hop reorders or limits bandwidth, the hops'
        latency samplers (else None: the general :meth:`_delay`)."""
        route = self._routes.get((gs, gd))
        if route is None:
            hops = self.hops(gs, gd)
            specs = [self.link(*hop) for hop in hops]
            simple = not any(spec.reorder or spec.bandwidth_bytes_per_s for spec in specs)
            route = self._routes[(gs, gd)] = (
                hops, specs, self.rng_for(f"net/{gs}->{gd}"),
                tuple(spec.loss for spec in specs if spec.loss),
                tuple(spec.duplicate for spec in specs if spec.duplicate),
                tuple(sampler(spec.latency_ms, 1.0) for spec in specs) if simple else None)
        return route

    def _send_route(self, src: str, dst: str) -> tuple:
        """:meth:`_route` of the nodes' groups plus their pair's :class:`_LinkState`, kept per
        (source node, destination node): a send looks its route up once."""
        groups = self.groups
        gs, gd = groups.get(src, src), groups.get(dst, dst)
        st = self._state.get((gs, gd))
        if st is None:
            st = self._state[(gs, gd)] = _LinkState()
        route = self._sends[(src, dst)] = (*(self._routes.get((gs, gd)) or self._route(gs, gd)), st)
        return route

    # -- sending --------------------------------------------------------
    def _drop(self, msg: Message, reason: str) -> None:
        self.drops_by_reason[reason] = self.drops_by_reason.get(reason, 0) + 1
        self.history.record(self.env.now, "net.drop", src=msg.src, dst=msg.dst, kind=msg.kind, reason=reason)

    def _delay(self, hops, specs, rng, size: int) -> float:
        delay = 0.0
        for hop, spec in zip(hops, specs, strict=True):
            delay += sampler(spec.latency_ms, 1.0)(rng) / 1000.0
            if spec.reorder and rng.random() < spec.reorder:
                delay += spec.reorder_extra_ms / 1000.0
            if spec.bandwidth_bytes_per_s:
                st = self._state.setdefault(hop, _LinkState())
                start = max(self.env.now, st.free_at)
                st.free_at = start + size / spec.bandwidth_bytes_per_s
                delay += st.free_at - self.env.now
        return delay

    def send(self, src: str, dst: str, kind: str, payload: object, size: int = 256) -> None:
        self._next_id += 1
        msg = Message(src, dst, kind, payload, size, self._next_id)
        if self.blocked and self.is_blocked(src, dst):
            self._drop(msg, "partition")
            return
        route = self._sends.get((src, dst))
        if route is None:
            route = self._send_route(src, dst)
        hops, specs, rng, losses, duplicates, latencies, st = route
        for p in losses:  # a hop loses it (draws stop at the first loss, as any() did)
            if rng.random() < p:
                self._drop(msg, "loss")
                return
        copies = 1
        for p in duplicates:
            if rng.random() < p:
                copies = 2
                self.history.record(self.env.now, "net.duplicate", src=src, dst=dst, kind=kind)
                break
        st.sent += 1
        env = self.env
        for copy in _ONE_COPY if copies == 1 else _TWO_COPIES:
            if latencies is None:
                delay = self._delay(hops, specs, rng, size)
            else:
                delay = 0.0
                for latency in latencies:
                    delay += latency(rng) / 1000.0
            if copy:  # the duplicate: a queue entry of its own
                call_later(env, delay, partial(self._arrive, msg))
                continue
            # call_later(env, delay, ...) with the message as the queue entry: the same
            # (time, priority, event id), one object fewer per message
            if delay < 0:
                raise ValueError(f"Negative delay {delay}")
            msg.callbacks, msg._ok = self._on_arrive, True
            heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), msg))

    def _arrive(self, msg: Message, _event=None) -> None:
        """The delay is over: drop (partition, node down, no such node) or hand over."""
        if self.blocked and self.is_blocked(msg.src, msg.dst):  # partition began while in flight
            self._drop(msg, "partition")
            return
        if msg.dst in self.down:
            self._drop(msg, "node_down")
            refuse = self.on_down.get(msg.dst)
            if refuse is not None:
                refuse(msg)
            return
        handler = self.handlers.get(msg.dst)
        if handler is not None:
            handler(msg)
            return
        box = self.mailboxes.get(msg.dst)
        if box is None:
            self._drop(msg, "no_such_node")
            return
        box.put(msg)
