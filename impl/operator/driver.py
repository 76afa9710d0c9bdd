"""One controller step in the order that makes a kill anywhere safe (every driver uses it).

Why this module exists: ``flk operator run``, the simulator and the
Hypothesis crash tests must take the same steps in the same order, or the
resume guarantee holds for one of them only. :func:`step`:

1. ``observe()`` the deployment (plus the previous action's error);
2. :func:`~flk.impl.operator.controller.reconcile`;
3. ``save(status)`` -- the new status, with its transitions in ``pending_audit``;
4. ``audit(status)`` -- writes the pending transitions (each once) and clears them;
   ``save(status)`` again;
5. ``execute(action)`` for each action, in order; the first failure stops the
   rest (its message is observed next time).

A kill between any two steps leaves either the old status (the step is redone
from a fresh observation) or the new one (its audit records are flushed and its
ensure action issued again on resume). Callables do the I/O; ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .controller import Result, reconcile
from .policy import Policy


def step(policy: Policy, load: Callable[[], dict | None], save: Callable[[dict], None],
         audit: Callable[[dict], None], observe: Callable[[], Mapping],
         execute: Callable[[dict], str | None], now: float, last_error: str | None = None,
         after_seq: int = 0) -> tuple[Result, str | None]:
    """One reconcile of ``policy``; returns the result and the error of the first failed action (or None).
    ``after_seq``: the last transition of ``policy`` its audit log holds (:func:`records.last_seq`),
    where a status started over continues the numbering."""
    observed = dict(observe())
    if last_error:
        observed["error"] = last_error
    res = reconcile(policy, load(), observed, now, after_seq)
    save(res.status)
    if res.status.get("pending_audit"):
        audit(res.status)
        save(res.status)
    for action in res.actions:
        err = execute(action)
        if err:
            return res, err
    return res, None
