"""INV-AT-LEAST-ONCE says what the history shows of each unanswered request: the client gave up
(its reason), its agent crashed after the last attempt, or the run ended while the request
waited for an answer or for its retry. A request answered 429 until the client's retry budget
ran out is not "sent but never answered" (that wording sent a researcher looking for a lost
message in an overload sweep)."""

from __future__ import annotations

from flk.sim import api, checkers


def _send(req, attempt, t, agent="a0"):
    return {"type": "client.send", "req": req, "attempt": attempt, "t_us": t, "agent": agent, "tenant": "t0",
            "pcs_id": f"p{req}", "digest": "d", "kind": "valid", "region": "r1"}


def _recv(req, attempt, t, status):
    return {"type": "client.recv", "req": req, "attempt": attempt, "t_us": t, "status": status, "replay": False,
            "body_sha": "", "region": "r1"}


HISTORY = [
    _send(1, 1, 10), _recv(1, 1, 20, 200),  # answered: no violation
    _send(2, 1, 10), _recv(2, 1, 20, 429), _send(2, 2, 30), _recv(2, 2, 40, 429),
    {"type": "client.give_up", "req": 2, "t_us": 40, "reason": "2 attempts; last HTTP 429"},
    _send(3, 1, 10, agent="a1"),
    {"type": "fault.start", "kind": "agent_crash", "target": "a1", "t_us": 15},
    _send(4, 1, 10), _recv(4, 1, 20, 503),
    _send(5, 1, 10), {"type": "client.timeout", "req": 5, "attempt": 1, "t_us": 50, "region": "r1"},
    _send(6, 1, 10), _recv(6, 1, 20, 429), _send(6, 2, 30),  # the retry had no answer yet
    _send(7, 1, 10, agent="a1"), _recv(7, 1, 12, 429),  # crashed after its only attempt: the crash is what it shows
]


def test_each_unanswered_request_says_what_the_history_shows():
    res = checkers.inv_at_least_once(HISTORY)
    assert not res.ok and res.checked == 7
    assert {v["req"]: v["why"] for v in res.violations} == {
        2: "the client gave up (2 attempts; last HTTP 429)",
        3: "its agent crashed after attempt 1 and nothing resubmitted it",
        4: "sent but never answered: attempt 1 was answered 503, and the run ended before the client retried",
        5: "sent but never answered: attempt 1 timed out, and the run ended before the client retried",
        6: "sent but never answered: attempt 2 had no answer when the run ended",
        7: "its agent crashed after attempt 1 and nothing resubmitted it",
    }
    assert res.note == ""  # an agent crash happened: the outbox note does not apply


def test_a_crash_before_the_last_attempt_is_not_the_reason():
    """The agent crashed, restarted and resubmitted: the crash precedes the last attempt."""
    events = [_send(1, 1, 10), {"type": "fault.start", "kind": "agent_crash", "target": "a0", "t_us": 15},
              {"type": "client.resubmit", "req": 1, "agent": "a0", "seq": 0, "t_us": 30}, _send(1, 1, 30)]
    (v,) = checkers.inv_at_least_once(events).violations
    assert v["why"] == "sent but never answered: attempt 1 had no answer when the run ended"


def test_an_overload_run_names_the_clients_give_ups(tmp_path, capsys):
    """A real run past the region's capacity with a two-attempt budget: every violation is a give-up
    the history records, and the run's table prints the first reason."""
    res = api.run("overload-backpressure", seed=1, overrides=[
        "workload.rate_per_s=3000", "scenario.duration_s=2", "workload.max_attempts=2", "scenario.quiescence_s=4"],
        plots=False, progress=False)
    events = res.history.events
    gave_up = {e["req"] for e in events if e["type"] == "client.give_up"}
    check = checkers.inv_at_least_once(events)
    assert gave_up and {v["req"] for v in check.violations} == gave_up
    assert {v["why"] for v in check.violations} == {"the client gave up (2 attempts; last HTTP 429)"}
    from flk.impl.lab.cli.cmd_sim import _print_table

    _print_table(res.results)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("INV-AT-LEAST-ONCE"))
    assert line.endswith(f"{len(gave_up)} violations (no agent crash and no outbox resubmission in this run); "
                         "first: the client gave up (2 attempts; last HTTP 429)"), line
