"""SOMETIMES-ROTATED-KEY-ACCEPTED (flk.sim.checkers.rotated_key_accepted): one check of a key
rotation for the simulator and the cluster runner -- the requests first sent after it were
answered 2xx, and on a real cluster every running server reloaded its tenants file."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from flk.sim import api
from flk.sim.checkers import rotated_key_accepted


def _ev(sends: list[tuple[int, int, int]], recvs: list[tuple[int, int]]) -> dict:
    ev: dict = defaultdict(list)
    ev["client.send"] = [{"req": r, "attempt": a, "t_us": t} for r, a, t in sends]
    ev["client.recv"] = [{"req": r, "status": s} for r, s in recvs]
    return ev


def test_the_key_rotation_study_passes_it():
    result = api.run("key-rotation", 1, plots=False)
    check = next(c for c in result.results["invariants"] if c["id"] == "SOMETIMES-ROTATED-KEY-ACCEPTED")
    assert check["ok"] and check["note"].endswith("answered 2xx") and not check["note"].startswith("0 of"), check


@given(statuses=st.lists(st.sampled_from([200, 202, 401, 409, 429, 503]), min_size=1, max_size=20),
       before=st.lists(st.sampled_from([200, 401]), max_size=5),
       servers=st.one_of(st.none(), st.tuples(st.integers(0, 3), st.integers(0, 3))))
def test_it_holds_exactly_when_a_new_key_request_got_2xx_and_every_server_reloaded(statuses, before, servers):
    rotation = {"t_us": 1_000, **({"reloaded": servers[0], "running": servers[1]} if servers else {})}
    sends = [(i, 1, 500) for i in range(len(before))]  # sent before the rotation (old key)
    sends += [(100 + i, 1, 2_000) for i in range(len(statuses))] + [(100, 2, 3_000)]  # a retry is no first send
    recvs = [(i, s) for i, s in enumerate(before)] + [(100 + i, s) for i, s in enumerate(statuses)]
    check = rotated_key_accepted([rotation], _ev(sends, recvs))
    fresh_ok = any(200 <= s < 300 for s in statuses)
    assert check.ok == (fresh_ok and (servers is None or servers[0] == servers[1]))
