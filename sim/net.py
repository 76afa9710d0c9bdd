"""Simulated network: per-link latency distributions, loss, duplication,
reordering, symmetric and asymmetric partitions, and a bandwidth limit.

Messages are delivered into the destination node's mailbox (a SimPy store)
after the sampled delay. Every drop is recorded in the history with its reason
so "sometimes" checks can prove a partition really cut traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import simpy

from .history import History
from .rng import sample


@dataclass
class LinkSpec:
    latency_ms: Mapping | float = 1.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0          # probability of an extra delay that reorders a message
    reorder_extra_ms: float = 20.0
    bandwidth_bytes_per_s: float | None = None


@dataclass
class Message:
    src: str
    dst: str
    kind: str
    payload: object
    size: int = 256
    msg_id: int = 0


@dataclass
class _LinkState:
    free_at: float = 0.0
    sent: int = 0
    dropped: int = 0


@dataclass
class Network:
    env: simpy.Environment
    history: History
    rng_for: Callable[[str], object]
    default: LinkSpec = field(default_factory=LinkSpec)
    links: dict[tuple[str, str], LinkSpec] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)  # node -> group (region) for link lookup
    record_sends: bool = False

    def __post_init__(self) -> None:
        self.mailboxes: dict[str, simpy.Store] = {}
        self.blocked: set[tuple[str, str]] = set()  # directed (src_group, dst_group)
        self.down: set[str] = set()
        self._state: dict[tuple[str, str], _LinkState] = {}
        self._next_id = 0
        self.drops_by_reason: dict[str, int] = {}

    # -- topology -------------------------------------------------------
    def register(self, node: str, group: str | None = None) -> simpy.Store:
        box = simpy.Store(self.env)
        self.mailboxes[node] = box
        self.groups[node] = group or node
        return box

    def group(self, node: str) -> str:
        return self.groups.get(node, node)

    def spec(self, src: str, dst: str) -> LinkSpec:
        gs, gd = self.group(src), self.group(dst)
        return self.links.get((gs, gd)) or self.links.get((gd, gs)) or self.default

    # -- faults ---------------------------------------------------------
    def partition(self, a: list[str], b: list[str], symmetric: bool = True) -> None:
        for x in a:
            for y in b:
                self.blocked.add((x, y))
                if symmetric:
                    self.blocked.add((y, x))

    def heal(self, a: list[str] | None = None, b: list[str] | None = None) -> None:
        if a is None:
            self.blocked.clear()
            return
        for x in a:
            for y in b or []:
                self.blocked.discard((x, y))
                self.blocked.discard((y, x))

    def is_blocked(self, src: str, dst: str) -> bool:
        return (self.group(src), self.group(dst)) in self.blocked

    # -- sending --------------------------------------------------------
    def _drop(self, msg: Message, reason: str) -> None:
        self.drops_by_reason[reason] = self.drops_by_reason.get(reason, 0) + 1
        self.history.record(self.env.now, "net.drop", src=msg.src, dst=msg.dst, kind=msg.kind, reason=reason)

    def send(self, src: str, dst: str, kind: str, payload: object, size: int = 256) -> None:
        self._next_id += 1
        msg = Message(src, dst, kind, payload, size, self._next_id)
        if self.is_blocked(src, dst):
            self._drop(msg, "partition")
            return
        spec = self.spec(src, dst)
        rng = self.rng_for(f"net/{self.group(src)}->{self.group(dst)}")
        if spec.loss and rng.random() < spec.loss:
            self._drop(msg, "loss")
            return
        copies = 2 if spec.duplicate and rng.random() < spec.duplicate else 1
        if copies == 2:
            self.history.record(self.env.now, "net.duplicate", src=src, dst=dst, kind=kind)
        st = self._state.setdefault((self.group(src), self.group(dst)), _LinkState())
        st.sent += 1
        for _ in range(copies):
            delay = sample(spec.latency_ms, rng, 1.0) / 1000.0
            if spec.reorder and rng.random() < spec.reorder:
                delay += spec.reorder_extra_ms / 1000.0
            start = self.env.now
            if spec.bandwidth_bytes_per_s:
                start = max(start, st.free_at)
                st.free_at = start + size / spec.bandwidth_bytes_per_s
                delay += st.free_at - self.env.now
            self.env.process(self._deliver(msg, delay))

    def _deliver(self, msg: Message, delay: float):
        yield self.env.timeout(delay)
        if self.is_blocked(msg.src, msg.dst):  # partition began while in flight
            self._drop(msg, "partition")
            return
        if msg.dst in self.down:
            self._drop(msg, "node_down")
            return
        box = self.mailboxes.get(msg.dst)
        if box is None:
            self._drop(msg, "no_such_node")
            return
        yield box.put(msg)
