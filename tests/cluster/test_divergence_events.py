"""The cluster runner reads the servers' ``crr_divergence`` log lines as the simulator's
``crr.divergence`` events: the lines one check writes together (one per flagged peer) are one
event with its worst severity, two checks a period apart are two, and a log line that is cut
off or not JSON is skipped."""

from __future__ import annotations

import json
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.lab.cluster.driver import Clock
from flk.impl.lab.cluster.regions import RegionProcess
from flk.impl.lab.cluster.runner import ClusterRun, Recorder

T0 = 1_795_000_000.0


def _region(tmp_path, lines: list[str]) -> RegionProcess:
    r = RegionProcess.__new__(RegionProcess)  # only its folder: no namespace, no process
    r.dir = tmp_path
    (tmp_path / "server.log").write_text("\n".join(lines) + "\n")
    return r


def _line(ts: float, severity: str, peer: str) -> str:
    return json.dumps({"ts": ts, "level": "warning", "event": "crr_divergence", "worker": 0, "severity": severity,
                       "peer": peer, "count_divergence": 0.2, "sample_mismatch": 0.3, "open_conflicts": 0})


def _events(tmp_path, lines: list[str], interval: float = 2.0) -> list[dict]:
    run = SimpleNamespace(replicated=True, regions={"eu": _region(tmp_path, lines)}, rec=Recorder(Clock()),
                          wall_t0=T0, data={"replication": {"divergence_interval_s": interval}})
    ClusterRun.divergence_events(run)
    return run.rec.events


def test_one_checks_lines_are_one_event_with_the_worst_severity(tmp_path):
    lines = [_line(T0 + 10.0, "warning", "us"), _line(T0 + 10.0002, "critical", "ap"),
             '{"ts": 1795000011.0, "event": "crr_divergence", "sever',  # a line cut off: skipped
             json.dumps({"ts": T0 + 11.0, "event": "worker_ready"}),  # another event: not a check
             _line(T0 + 12.0, "warning", "ap")]
    got = [(e["t_us"], e["region"], e["peers"], e["worst"]) for e in _events(tmp_path, lines)]
    assert got == [(10_000_000, "eu", 2, "critical"), (12_000_000, "eu", 1, "warning")]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.lists(st.sampled_from(["warning", "critical"]), min_size=1,
                                                       max_size=3)), min_size=1, max_size=6),
       st.sampled_from([0.4, 2.0, 60.0]))
def test_checks_a_period_apart_are_never_merged(tmp_path_factory, checks, interval):
    """Each check writes its lines within a millisecond; checks are a period or more apart."""
    lines, t, want = [], T0, []
    for gap, severities in checks:
        t += gap * interval
        lines += [_line(t + i * 1e-4, s, f"p{i}") for i, s in enumerate(severities)]
        want.append((len(severities), "critical" if "critical" in severities else "warning"))
    got = _events(tmp_path_factory.mktemp("log"), lines, interval)
    assert [(e["peers"], e["worst"]) for e in got] == want


@settings(max_examples=50, derandomize=True, deadline=None)
@given(st.integers(0, 4), st.integers(0, 4), st.integers(0, 40))
def test_server_events_from_an_offset_read_only_what_was_logged_after_it(tmp_path_factory, before, after, cut):
    """A rotation waits for reload lines logged after its SIGHUP: the offset taken then
    (``log_size``) makes ``server_events`` see only later lines; a line cut at the offset (a
    write in progress) is skipped, not misread."""
    d = tmp_path_factory.mktemp("log")
    r = _region(d, [_line(T0 + k, "warn", "us") for k in range(before)])
    offset = r.log_size()
    assert [e["ts"] for e in r.server_events("crr_divergence")] == [T0 + k for k in range(before)]
    with open(d / "server.log", "a") as f:
        f.write(_line(T0 + 100, "warn", "us")[:cut])  # a line being written when the offset is taken
    offset_mid = r.log_size()
    with open(d / "server.log", "a") as f:
        f.write(_line(T0 + 100, "warn", "us")[cut:] + "\n")
        f.write("".join(_line(T0 + 200 + k, "warn", "us") + "\n" for k in range(after)))
    later = [T0 + 200 + k for k in range(after)]
    assert [e["ts"] for e in r.server_events("crr_divergence", offset)] == [T0 + 100, *later]
    assert [e["ts"] for e in r.server_events("crr_divergence", offset_mid)] == ([T0 + 100] if cut == 0 else []) + later
    (d / "server.log").unlink()
    assert r.log_size() == 0 and r.server_events("crr_divergence") == []  # no log yet: nothing, no error
