"""Cleanup of a killed run's veth links (``flk.impl.lab.cluster.network.cleanup``): the kernel
destroys a veth whose peer sat in a just-deleted namespace asynchronously, so ``ip link del``
can fail on a link already on its way out. Such a link is not "left behind"; one that stays
is. (A fresh-clone ``make test`` once failed with "could not remove: link ..." this way.)"""

from __future__ import annotations

import subprocess

import pytest

from flk.impl.lab.cluster import network


def scripted(answers: list[tuple[str, int]], calls: list[str]):
    """A stand-in for ``network.run`` answering each ``ip link`` call from ``answers``."""

    def run(cmd, check=True, timeout=20.0):
        verb = cmd[2]
        calls.append(verb)
        expected, code = answers.pop(0)
        assert verb == expected, (verb, expected)
        return subprocess.CompletedProcess(cmd, code, "", "")

    return run


@pytest.mark.parametrize("answers", [
    ([("show", 1)]),  # already gone
    ([("show", 0), ("del", 0)]),                   # deleted
    ([("show", 0), ("del", 1), ("show", 1)]),      # the delete lost the race to the kernel
    ([("show", 0), ("del", 1), ("show", 0), ("del", 0)]),  # still there a moment: deleted next time
])
def test_a_link_on_its_way_out_is_not_left_behind(monkeypatch, answers):
    calls: list[str] = []
    monkeypatch.setattr(network, "run", scripted(list(answers), calls))
    assert network.cleanup({"links": ["flkxv1"]}) == []
    assert len(calls) == len(answers)


def test_a_link_that_stays_is_reported(monkeypatch):
    calls: list[str] = []
    answers = [("show", 0), ("del", 1)] * 3 + [("show", 0)]
    monkeypatch.setattr(network, "run", scripted(answers, calls))
    monkeypatch.setattr(network.time, "sleep", lambda s: None)
    assert network._link_removed("flkxv1", tries=3) is False
    monkeypatch.setattr(network, "run", scripted([("show", 0), ("del", 1)] * 20 + [("show", 0)], []))
    assert network.cleanup({"links": ["flkxv1"]}) == ["link flkxv1"]
