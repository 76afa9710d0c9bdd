"""The cluster runner's copy ages are true time, as the simulator's (``crr.copied.age_s`` is
``now - true receive time`` there): from the send of a segment's earliest record -- the
``sent_at`` its client wrote into the body, on the runner's clock -- not from the region's
``received_at``, which its wall clock stamps and a clock fault moves. The stamps' figure stays
as ``stamp_age_s``. A real run of clock-skew-replicated read age_s -20 to -26 s for every
segment us wrote while its clock ran 30 s ahead (the stamps against the store node's clock),
and the lag samples' copy term read the same way."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.agent import factory
from flk.impl.agent.client import Submission
from flk.impl.lab.cluster.driver import Clock
from flk.impl.lab.cluster.regions import RegionProcess
from flk.impl.lab.cluster.runner import ClusterRun, Recorder, runner_time
from flk.impl.lab.cluster.storenode import first_sent_at
from flk.sim.region import SIM_EPOCH

T0 = 1_795_000_000.0  # the runner's wall clock at the workload's start


def make_pcs(i: int) -> dict:
    doc = factory.synthetic_pcs(factory.seeded_root("ages", i), "shard-001", 1)
    return factory.sign(doc, b"store-event-ages-key-0001", "hmac")


def _body(sent: float) -> bytes:
    """A body as the cluster's clients send it at runner time ``sent`` (SIM_EPOCH + clock.now)."""
    return Submission(make_pcs(1), ["http://eu"], rng=random.Random(1)).body_for(1, SIM_EPOCH + sent)


def _region(tmp_path, name: str, lines: list[dict]) -> RegionProcess:
    r = RegionProcess.__new__(RegionProcess)  # only its folder: no namespace, no process
    r.dir = tmp_path / name
    r.dir.mkdir()
    (r.dir / "store-events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return r


def _run(tmp_path, logs: dict[str, list[dict]], samples: list[dict] | None = None):
    run = SimpleNamespace(replicated=True, rec=Recorder(Clock()), wall_t0=T0, region_ids=sorted(logs),
                          regions={rid: _region(tmp_path, rid, lines) for rid, lines in logs.items()},
                          samples=samples or [])
    ClusterRun.store_events(run)
    return run.rec.events


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 3600.0), st.floats(0.0, 30.0), st.floats(-120.0, 120.0))
def test_a_bodys_sent_at_reads_back_on_the_runners_clock(sent, wait, skew) -> None:
    """To the millisecond the body carries; a region's clock offset does not enter it."""
    records = [SimpleNamespace(body=b"not json", received_at=T0 + sent + skew),
               SimpleNamespace(body=_body(sent), received_at=T0 + sent + skew),
               SimpleNamespace(body=_body(sent + wait), received_at=T0 + sent + wait + skew)]
    got = runner_time(first_sent_at(records))
    assert got is not None and abs(got - sent) <= 0.0011
    assert runner_time(first_sent_at([SimpleNamespace(body=b'{"sent_at": 5}')])) is None
    assert runner_time("2027-01-01T00:00:00") is None and runner_time(None) is None


def test_copies_of_segments_stamped_by_a_clock_30s_ahead_are_aged_in_true_time(tmp_path) -> None:
    """us's clock runs 30 s ahead: its records' received_at are 30 s in the future of the store
    node's clock. The copies' ages come from the bodies' sent_at; a segment without one keeps
    the stamps' age; the lag samples' copy term uses the same true age."""
    sent = SIM_EPOCH + 10.0  # runner time 10.0 s
    text = Submission(make_pcs(2), ["http://us"], rng=random.Random(2)).body_for(1, sent)
    first = first_sent_at([SimpleNamespace(body=text)])
    us = [{"event": "seen", "key": "us/seg-1.log", "t": T0 + 10.5, "oldest": T0 + 40.2, "records": 9,
           "first_sent_at": first},
          {"event": "seen", "key": "us/seg-2.log", "t": T0 + 11.0, "oldest": T0 + 10.8, "records": 3,
           "first_sent_at": None},
          {"event": "copied", "key": "us/seg-1.log", "peer": "eu", "t": T0 + 14.0, "age_s": 14.0 - 40.2},
          {"event": "copied", "key": "us/seg-2.log", "peer": "eu", "t": T0 + 12.0, "age_s": 12.0 - 10.8}]
    samples = [{"t": 13.0, "ship_lag": {"us": 0.5, "eu": 0.0}, "keys": {}, "conflicts": {}}]
    events = _run(tmp_path, {"us": us, "eu": []}, samples)
    copies = {e["key"]: e for e in events if e["type"] == "crr.copied"}
    assert abs(copies["us/seg-1.log"]["age_s"] - 4.0) < 0.002  # 14.0 - 10.0, not -26.2
    assert abs(copies["us/seg-1.log"]["stamp_age_s"] + 26.2) < 1e-9  # what the stamps say, kept
    assert abs(copies["us/seg-2.log"]["age_s"] - 1.2) < 1e-6  # no sent_at: the stamps' age
    (sample,) = [e for e in events if e["type"] == "crr.sample"]
    assert abs(sample["by_region"]["us"] - 3.0) < 0.002  # 13.0 - 10.0: seg-1 not yet at eu
    assert sample["ship_gauge"]["us"] == 0.5
