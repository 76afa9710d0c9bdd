"""When a batch of submissions starts: the batch-formation rule as a pure state machine.

Why this module exists: the server's submit driver (:mod:`flk.impl.server.batchdriver`,
asyncio time) and the simulator's regions (:mod:`flk.sim.region`, SimPy time) must
form batches by the same rule, or a study of the simulator studies another
system. The rule lives here once, with no clock, no threads and no I/O; a driver
passes ``now`` (seconds, non-decreasing) and keeps the queued requests itself.

The rule: a batch starts ``max_delay_s`` after its oldest queued request arrived,
or at once when as many requests wait as the last batch held (``expect``: the
clients a batch answered are the ones likely to come back, so once they have, no
one else is worth the wait; ``max_batch`` before the first batch, so a fresh
queue's first batch waits the delay, and never more); at most ``depth`` batches run at a
time (1 unless a driver pipelines: the server's batch driver runs 2, one being
verified while the next one's WAL records are appended and synced); what arrives
while no batch may start is the next batch, due as soon as a running one ends
(its requests waited at least as long as a batch's delay already).

``join``: a driver whose batch thread picks a started batch up later than the
loop started it (the server's: a thread hand-off, a fraction of a millisecond under
load) lets what queued meanwhile ride along, up to ``max_batch`` -- while only that
batch runs, so nothing overtakes a batch started before it. The batch then holds
what had queued when its append began; a driver without that gap (the simulator's
region appends at the instant its batch starts) has nothing to join.

Why ``expect``: with a fixed delay, every batch that starts on an idle queue waits
the whole delay, even when every client that could join already has (a closed loop
of 16 clients answered together comes back as 16 requests; at low load a lone
request has no one to wait for). PostgreSQL's ``commit_delay`` has the same guard
(it sleeps only while ``commit_siblings`` other transactions are active). The
delay stays the bound: when fewer come back than last time, the batch starts at its
deadline and ``expect`` drops to what came; no batch on an idle queue waits longer
than the delay, and what waits behind a running batch is due when it ends, as before.

======================  ===========================================  ==========================
event                   condition                                    effect
======================  ===========================================  ==========================
``add(now)``            the queue was empty                          oldest := now
``due(now)``            not busy (running < depth), queued and       True: call ``take``
                        (queued >= expect or oldest + delay <= now)
``take(now)``           (due)                                        running += 1; n :=
                                                                     min(queued, max_batch);
                                                                     expect := n; requests
                                                                     left are due when one ends
``join(k)``             one batch runs, before its append             queued -= k; expect += k
                        (k <= queued)
``done()``              (a batch answered)                           running -= 1
``forget()``            (a crash)                                    nothing queued or running;
                                                                     expect := max_batch
``deadline()``          not busy and queued                          when the next batch is due
======================  ===========================================  ==========================
"""

from __future__ import annotations

import math


class BatchFormation:
    """The batch-formation state of one submit queue (see the module docstring)."""

    __slots__ = ("max_delay_s", "max_batch", "depth", "queued", "oldest", "carried", "running", "batches", "expect")

    def __init__(self, max_delay_s: float = 0.002, max_batch: int = 256, depth: int = 1) -> None:
        if not max_delay_s >= 0 or math.isinf(max_delay_s) or max_batch < 1 or depth < 1:
            raise ValueError("batch formation needs a finite max_delay_s >= 0, max_batch >= 1 and depth >= 1")
        self.max_delay_s = float(max_delay_s)
        self.max_batch = int(max_batch)
        self.depth = int(depth)  # how many batches may run at once (a pipelining driver: > 1)
        self.queued = 0  # requests waiting for a batch
        self.oldest = 0.0  # when the oldest of them arrived (meaningful while queued)
        self.carried = False  # they waited behind a running batch: due as soon as it ends
        self.running = 0  # batches started and not yet answered
        self.batches = 0  # batches started
        self.expect = self.max_batch  # how many the last batch held: a batch starts once as many wait

    @property
    def busy(self) -> bool:
        """No batch may start now: ``depth`` batches run."""
        return self.running >= self.depth

    @property
    def ready(self) -> bool:
        """As many requests wait as the last batch held (or ``max_batch``): no reason to wait
        for more (a batch starts now unless ``depth`` batches run)."""
        return self.queued >= self.expect

    def add(self, now: float) -> None:
        """A request was queued at ``now``."""
        if self.queued == 0:
            self.oldest, self.carried = now, False
        self.queued += 1

    def deadline(self) -> float | None:
        """When the next batch is due (None: nothing queued, or a batch runs: its end decides)."""
        if self.busy or self.queued == 0:
            return None
        if self.queued >= self.expect or self.carried:
            return self.oldest  # due now (as many as last time, or they waited behind the last batch)
        return self.oldest + self.max_delay_s

    def due(self, now: float) -> bool:
        """Whether a batch should start at ``now``."""
        deadline = self.deadline()
        return deadline is not None and deadline <= now

    def take(self, now: float) -> int:
        """Start a batch: how many of the queued requests (oldest first) it holds."""
        n = min(self.queued, self.max_batch)
        self.queued -= n
        self.running += 1
        self.batches += 1
        self.expect = n  # <= max_batch
        if self.queued:
            self.oldest, self.carried = now, True  # the rest is due when this batch ends
        return n

    def join(self, k: int) -> int:
        """Up to ``k`` of the oldest queued requests join the one running batch before its
        append (none while another batch runs; the batch stays within ``max_batch``);
        returns how many joined."""
        k = max(0, min(k, self.queued, self.max_batch - self.expect)) if self.running == 1 else 0
        self.queued -= k
        self.expect += k
        return k

    def done(self) -> None:
        """A running batch answered."""
        if self.running > 0:
            self.running -= 1

    def forget(self) -> None:
        """Everything queued and running is gone (a crash)."""
        self.queued, self.running, self.expect = 0, 0, self.max_batch
