"""What the simulator's clients observed, in the black-box checker's terms.

Why this module exists: ``flk.sim.checkers`` judge a run from inside (WAL
records, dedup puts, stores). The black-box checker (``flk.model.history``)
judges only what clients saw, the way it judges a real deployment from
``flk agent load --history``. This adapter turns a simulator history into
that input, so one run can be judged both ways and the two can be compared:

* one :class:`~flk.model.history.Op` per ``client.send`` -- tenant, pcs_id,
  digest, the region it went to, invoke = the send's time -- completed by the
  next ``client.recv`` (status, ``replay``) or ``client.timeout`` (no answer:
  indeterminate) of the same request and attempt; a send never answered
  (its agent crashed meanwhile) is indeterminate, completing at the end of
  the history;
* the network may duplicate a request (``net.duplicate``): the checker is
  told, so a replay answer may be explained by the request's own first
  delivery;
* final reads: each region's ``final.entry`` events (its dedup store at the
  end), every region a request went to or that reported a final store being
  covered, empty or not.

Times are simulated seconds (``t_us / 1e6``). Op ids are
``<req>-<attempt>`` (``-r<n>`` for the n-th resubmission of the same attempt
from an agent's outbox after a crash). Pure: events in, values out.
"""

from __future__ import annotations

from collections.abc import Iterable

from flk.model.history import FinalReads, HistoryReport, Op, check


def _seconds(event: dict) -> float:
    return event["t_us"] / 1_000_000


def observed_ops(events: Iterable[dict]) -> list[Op]:
    """The client-observed operations of a simulator history (see the module docstring)."""
    events = list(events)
    end = max((_seconds(e) for e in events), default=0.0)
    pending: dict[tuple[int, int], list[dict]] = {}
    sends: dict[tuple[int, int], int] = {}
    answer_of: dict[int, dict] = {}  # id(send event) -> its answer event
    order: list[tuple[str, dict]] = []
    for e in events:
        kind = e["type"]
        if kind == "client.send":
            key = (e["req"], e["attempt"])
            sends[key] = sends.get(key, 0) + 1
            op_id = f"{e['req']}-{e['attempt']}" + (f"-r{sends[key]}" if sends[key] > 1 else "")
            pending.setdefault(key, []).append(e)
            order.append((op_id, e))
        elif kind in ("client.recv", "client.timeout"):
            queue = pending.get((e["req"], e["attempt"]))
            if queue:
                answer_of[id(queue.pop(0))] = e
    ops = []
    for op_id, send in order:
        answer = answer_of.get(id(send))
        status = answer.get("status") if answer is not None else None
        ops.append(Op(id=op_id, tenant=send["tenant"], pcs_id=send["pcs_id"], digest=send["digest"],
                      invoke=_seconds(send), complete=_seconds(answer) if answer is not None else end,
                      status=status, replay=answer.get("replay") if answer is not None else None,
                      region=send["region"],
                      error=None if status is not None else ("timeout" if answer is not None else "unanswered")))
    return ops


def final_reads(events: Iterable[dict]) -> FinalReads:
    """Each region's store at the end of the run: ``{region: {(tenant, pcs_id): (digest, status)}}``."""
    final: dict[str | None, dict] = {}
    for e in events:
        if e["type"] == "client.send":
            final.setdefault(e["region"], {})
        elif e["type"] == "final.entry":
            final.setdefault(e["region"], {})[(e["tenant"], e["pcs_id"])] = (e["digest"], e["status"])
    return final


def check_run(events: Iterable[dict], per_region: bool | None = None) -> HistoryReport:
    """The black-box verdict on a simulator history. ``per_region`` defaults to
    True when requests went to more than one region (replication between regions
    is asynchronous: first-write-wins is promised per region). When the network
    duplicated messages (``net.duplicate``), one request may be delivered twice
    and answered as a replay of its own first delivery."""
    events = list(events)
    ops = observed_ops(events)
    if per_region is None:
        per_region = len({op.region for op in ops}) > 1
    repeats = any(e["type"] == "net.duplicate" and e.get("kind") == "submit" for e in events)
    return check(ops, final_reads(events), per_region=per_region, requests_may_repeat=repeats)
