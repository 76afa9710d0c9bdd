"""A restarted ``flk serve`` counts only what it answers: the start-up replay of the
inbox WAL does not feed the verdict counters.

A replayed record was answered (and counted) by the process that received it. Before,
the start-up replay handed its events to the metrics sink, so a new process began with
every 401 of the replayed WAL in ``flk_signature_errors_total`` and every stored record
in ``flk_dedup_hits_total`` while it had answered nothing. Prometheus reads a counter
that restarted lower as a reset and counts all of it as new, so a restart showed up as
a burst of old signature failures (FlkSignatureFailureSpike paged on a restart); with a
memory or sharded store the whole WAL is replayed at every start, a clean one too.

Real ``flk serve`` processes (SQLite killed with SIGKILL; memory stopped cleanly), and
a Hypothesis test of the replay itself over any mix of records.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import types

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.dedup.memory import MemoryStore
from flk.impl.server.config import load_config
from flk.impl.server.pipeline import build_pipeline
from flk.impl.storage.inbox import InboxRecord, encode_inbox_record
from flk.impl.storage.wal import SegmentedLog
from flk.impl.testing.workload import bodies

from .proc import ServerProc

KEY = "0123456789abcdef0123456789abcdef"
GOOD = bodies(KEY.encode(), 12, seed=71)
FORGED = bodies(b"f" * 32, 24, seed=72)  # signed with a key the server does not hold: 401
VERDICTS = ("flk_accepted_total", "flk_escalated_total", "flk_signature_errors_total", "flk_dedup_hits_total",
            "flk_dedup_conflicts_total", "flk_rejected_total", "flk_ingest_total")


def counters(url: str) -> dict[str, float]:
    """Each verdict counter summed over its series, and flk_wal_replayed_total."""
    text = httpx.get(url + "/metrics", timeout=10).text
    out = {name: 0.0 for name in (*VERDICTS, "flk_wal_replayed_total")}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m and m.group(1) in out:
            out[m.group(1)] += float(m.group(2))
    return out


def submit_all(url: str, payloads: list[bytes]) -> list[int]:
    with httpx.Client(timeout=10) as client:
        return [client.post(url + "/v1/pcs/submit", content=b).status_code for b in payloads]


def replay_line(srv: ServerProc) -> dict:
    lines = [json.loads(line) for line in srv.log_text().splitlines() if '"event":"wal_replayed"' in line]
    return lines[-1]


def _restart_counts_nothing_it_did_not_answer(srv: ServerProc, restart) -> dict:
    srv.start()
    assert submit_all(srv.url, GOOD + FORGED) == [200] * len(GOOD) + [401] * len(FORGED)
    before = counters(srv.url)
    assert before["flk_signature_errors_total"] == len(FORGED)
    assert before["flk_accepted_total"] == len(GOOD)
    restart()
    after = counters(srv.url)
    assert after["flk_wal_replayed_total"] == len(GOOD) + len(FORGED)  # the replay ran over all of it
    assert {name: after[name] for name in VERDICTS} == dict.fromkeys(VERDICTS, 0.0)
    # and the new process counts what it answers
    assert submit_all(srv.url, FORGED[:3] + GOOD[:2]) == [401] * 3 + [200] * 2
    again = counters(srv.url)
    assert again["flk_signature_errors_total"] == 3
    assert again["flk_dedup_hits_total"] == 2
    return replay_line(srv)


def test_a_killed_server_restarts_with_its_verdict_counters_at_zero(tmp_path) -> None:
    srv = ServerProc(tmp_path, {"PCS_HMAC_KEY": KEY, "DATA_DIR": str(tmp_path / "data")})

    def restart() -> None:
        srv.kill()  # no checkpoint past the records: the restart replays them
        srv.start()

    try:
        line = _restart_counts_nothing_it_did_not_answer(srv, restart)
    finally:
        srv.stop()
    assert line["records"] == len(GOOD) + len(FORGED)
    assert line["stored"] == 0  # SQLite had every outcome: the replay wrote none


def test_a_memory_store_server_replays_everything_at_a_clean_restart_and_counts_none(tmp_path) -> None:
    srv = ServerProc(tmp_path, {"PCS_HMAC_KEY": KEY, "DATA_DIR": str(tmp_path / "data"), "DEDUP_BACKEND": "memory"})

    def restart() -> None:
        assert srv.stop() == 0
        srv.start()

    try:
        line = _restart_counts_nothing_it_did_not_answer(srv, restart)
    finally:
        srv.stop()
    assert line["stored"] == len(GOOD)  # the memory store kept nothing: the replay wrote every outcome again


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(picks=st.lists(st.integers(0, len(GOOD) + len(FORGED)), min_size=1, max_size=30))
def test_the_start_up_replay_emits_no_event_and_counts_what_it_wrote(picks) -> None:
    """Any mix of good, forged, duplicate and junk records: the replay hands nothing to
    the server's metrics, and ``stored`` is the number of distinct good records it wrote."""
    pool = GOOD + FORGED
    events: list = []  # what a metrics sink on the server would have been handed
    with tempfile.TemporaryDirectory() as d:
        cfg = load_config({"DATA_DIR": d, "PCS_HMAC_KEY": KEY})
        server = types.SimpleNamespace(store=MemoryStore(), metrics=events.append, executor=None,
                                       admission=types.SimpleNamespace(buckets=None),
                                       quarantine_record=lambda *a: None)
        wal = SegmentedLog(d + "/wal")
        t0 = time.time()
        wal.append_many([encode_inbox_record(InboxRecord("", t0 + k, "default",
                                                         pool[p] if p < len(pool) else b'{"junk": 1}'))
                         for k, p in enumerate(picks)])
        wal.sync()
        try:
            counts = build_pipeline(cfg, server)._replay_all(wal, 0)
        finally:
            wal.close()
    assert events == []
    assert counts["records"] == len(picks)
    assert counts["stored"] == len({p for p in picks if p < len(GOOD)})
