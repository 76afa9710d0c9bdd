"""The black-box history checker (``flk.model.history``) on synthetic histories.

Valid histories come from a reference system: one first-write-wins store,
every operation taking effect at a linearization point inside its
[invoke, complete] interval; a timeout may or may not take effect; a bad
signature never does. Every such history must check valid (with final reads
of the store) -- the checker must not cry wolf. Planted anomalies appended to
them must be found, each with a witness that is minimal: the checker on the
witness alone reports the same anomaly, and on the witness less any one
operation does not. The catching tests are derandomized.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flk.impl.lab import cli
from flk.model import history as hc
from flk.model.history import Op

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
REGIONS = ("http://127.0.0.1:1", "http://127.0.0.1:2")
DIGESTS = ("aa" * 32, "bb" * 32, "cc" * 32)


def _status_of(digest: str) -> int:
    return 202 if digest == DIGESTS[2] else 200  # the regime decides 200/202; a replay repeats it


@st.composite
def linearizable(draw, per_region: bool = False):
    """(ops, final reads) of a correct first-write-wins store (one per region with ``per_region``)."""
    n = draw(st.integers(1, 14))
    plans = []
    for i in range(n):
        invoke = draw(st.integers(0, 40)) + i / 100.0
        duration = draw(st.integers(1, 15))
        point = invoke + duration * draw(st.sampled_from((0.1, 0.3, 0.5, 0.7, 0.9)))
        plans.append((point, i, invoke, invoke + duration, draw(st.integers(0, 2)), draw(st.sampled_from(DIGESTS)),
                      draw(st.sampled_from(REGIONS)), draw(st.sampled_from(("ok", "ok", "ok", "timeout", "bad_sig"))),
                      draw(st.booleans())))
    store: dict = {}
    ops = []
    for _point, i, invoke, complete, key, digest, region, fate, applied in sorted(plans):
        k = (region, "t", f"pcs-{key}") if per_region else ("t", f"pcs-{key}")
        status = replay = None
        if fate == "bad_sig":
            status = 401
        elif fate == "timeout":
            if applied:
                store.setdefault(k, (digest, _status_of(digest)))
        elif k not in store:
            store[k] = (digest, _status_of(digest))
            status, replay = _status_of(digest), False
        elif store[k][0] == digest:
            status, replay = store[k][1], True
        else:
            status = 409
        ops.append(Op(f"op{i}", "t", f"pcs-{key}", digest, float(invoke), float(complete), status, replay, region,
                      "timeout" if fate == "timeout" else None))
    if per_region:
        return ops, {r: {k[1:]: v for k, v in store.items() if k[0] == r} for r in REGIONS}
    return ops, {None: dict(store)}


def _kinds(report) -> set[tuple[str, str]]:
    return {(a.invariant, a.kind) for a in report.anomalies}


def assert_minimal_witnesses(report, final) -> None:
    for anomaly in report.anomalies:
        alone = hc.check(anomaly.ops, final)
        assert (anomaly.invariant, anomaly.kind) in _kinds(alone), anomaly.describe()
        for drop in anomaly.ops:
            rest = [op for op in anomaly.ops if op is not drop]
            assert (anomaly.invariant, anomaly.kind) not in _kinds(hc.check(rest, final)), \
                f"witness not minimal: {anomaly.describe()} still holds without {drop.id}"


def _end(ops) -> float:
    return max(op.complete for op in ops) + 1.0


def _acked(ops) -> list[Op]:
    return [op for op in ops if op.outcome == hc.ACKED]


@SETTINGS
@given(st.booleans().flatmap(lambda per_region: st.tuples(st.just(per_region), linearizable(per_region))))
def test_inv_fww_inv_idempotent_replay_inv_no_acked_loss_linearizable_histories_are_valid(case):
    per_region, (ops, final) = case
    report = hc.check(ops, final, per_region=per_region)
    assert report.ok, "\n".join(a.describe() for a in report.anomalies)
    assert report.ops == len(ops)
    assert report.final_checked == len(_acked(ops))


@SETTINGS
@given(linearizable(), st.data())
def test_inv_fww_planted_second_acked_digest_is_caught_with_a_minimal_witness(case, data):
    ops, final = case
    acked = _acked(ops)
    assume(acked)
    victim = data.draw(st.sampled_from(acked))
    other = next(d for d in DIGESTS if d != victim.digest)
    t = _end(ops)
    planted = Op("planted", victim.tenant, victim.pcs_id, other, t, t + 1, 200, False, victim.region)
    report = hc.check([*ops, planted], final)
    found = [a for a in report.anomalies if a.kind == "two-acked-digests"]
    assert found and all(a.invariant == hc.INV_FWW for a in found)
    assert any(planted in a.ops and len(a.ops) == 2 for a in found)
    assert_minimal_witnesses(report, final)


@SETTINGS
@given(linearizable(), st.data())
def test_inv_idempotent_replay_planted_409_for_an_acked_duplicate_is_caught(case, data):
    ops, final = case
    acked = _acked(ops)
    assume(acked)
    victim = data.draw(st.sampled_from(acked))
    t = _end(ops)
    planted = Op("planted", victim.tenant, victim.pcs_id, victim.digest, t, t + 1, 409, None, victim.region)
    report = hc.check([*ops, planted], final)
    found = [a for a in report.anomalies if a.kind == "409-after-ack"]
    assert [a.invariant for a in found] == [hc.INV_IDEMPOTENT_REPLAY]
    assert found[0].ops[-1] is planted and found[0].ops[0].digest == victim.digest
    assert_minimal_witnesses(report, final)


@SETTINGS
@given(linearizable(), st.data())
def test_inv_idempotent_replay_planted_second_fresh_answer_is_caught(case, data):
    ops, final = case
    fresh = [op for op in ops if op.fresh]
    assume(fresh)
    victim = data.draw(st.sampled_from(fresh))
    t = _end(ops)
    planted = Op("planted", victim.tenant, victim.pcs_id, victim.digest, t, t + 1, victim.status, False,
                 victim.region)
    report = hc.check([*ops, planted], final)
    found = [a for a in report.anomalies if a.kind == "two-fresh-acks"]
    assert [a.ops for a in found] == [(victim, planted)]
    assert found[0].invariant == hc.INV_IDEMPOTENT_REPLAY
    assert_minimal_witnesses(report, final)


@SETTINGS
@given(linearizable(), st.data())
def test_inv_no_acked_loss_planted_lost_or_replaced_outcome_is_caught(case, data):
    ops, final = case
    acked = _acked(ops)
    assume(acked)
    victim = data.draw(st.sampled_from(acked))
    key = (victim.tenant, victim.pcs_id)
    replace = data.draw(st.booleans())
    store = dict(final[None])
    if replace:
        store[key] = (next(d for d in DIGESTS if d != victim.digest), 200)
    else:
        del store[key]
    report = hc.check(ops, {None: store})
    found = [a for a in report.anomalies if a.invariant == hc.INV_NO_ACKED_LOSS]
    assert len(found) == len({op.digest for op in acked if (op.tenant, op.pcs_id) == key})
    assert {a.kind for a in found} == {"acked-differs" if replace else "acked-absent"}
    first = min((op for op in acked if (op.tenant, op.pcs_id) == key), key=lambda o: (o.complete, o.invoke, o.id))
    assert first in [a.ops[0] for a in found]
    assert_minimal_witnesses(report, {None: store})


@SETTINGS
@given(linearizable(), st.sampled_from(("unjustified-409", "phantom-replay")))
def test_inv_fww_inv_idempotent_replay_answers_nobody_could_cause_are_caught(case, kind):
    ops, final = case
    t = _end(ops)
    status, replay = (409, None) if kind == "unjustified-409" else (200, True)
    planted = Op("planted", "t", "pcs-never-sent", DIGESTS[0], t, t + 1, status, replay, REGIONS[0])
    report = hc.check([*ops, planted], final)
    found = [a for a in report.anomalies if a.kind == kind]
    assert [a.ops for a in found] == [(planted,)]
    assert found[0].invariant == (hc.INV_FWW if kind == "unjustified-409" else hc.INV_IDEMPOTENT_REPLAY)


def test_inv_fww_real_time_order_and_indeterminate_ops_decide_a_409():
    a = Op("a", "t", "k", DIGESTS[0], 0.0, 1.0, None, None, REGIONS[0], "timeout")  # may have been stored
    b = Op("b", "t", "k", DIGESTS[1], 0.5, 2.0, 409, None, REGIONS[0])
    assert hc.check([a, b]).ok  # a timed-out write could have been stored first
    late = Op("a", "t", "k", DIGESTS[0], 3.0, 4.0, None, None, REGIONS[0], "timeout")
    report = hc.check([late, b])  # sent only after the 409 arrived: it cannot explain it
    assert [(x.kind, x.ops) for x in report.anomalies] == [("unjustified-409", (b,))]
    refused = Op("a", "t", "k", DIGESTS[0], 0.0, 1.0, 401, None, REGIONS[0])
    assert not hc.check([refused, b]).ok  # a refused request stores nothing
    then_acked = Op("c", "t", "k", DIGESTS[1], 5.0, 6.0, 200, False, REGIONS[0])
    report = hc.check([a, b, then_acked])
    assert [(x.kind, [o.id for o in x.ops]) for x in report.anomalies] == [("refused-then-acked", ["a", "b", "c"])]


def test_per_region_scope_allows_what_asynchronous_replication_allows():
    a = Op("a", "t", "k", DIGESTS[0], 0.0, 1.0, 200, False, REGIONS[0])
    b = Op("b", "t", "k", DIGESTS[1], 0.0, 1.0, 200, False, REGIONS[1])
    assert [x.kind for x in hc.check([a, b]).anomalies] == ["two-acked-digests"]
    assert hc.check([a, b], per_region=True).ok
    final = {REGIONS[0]: {("t", "k"): (DIGESTS[0], 200)}, REGIONS[1]: {}}
    report = hc.check([a, b], final, per_region=True)
    assert [(x.kind, x.ops, x.final["region"]) for x in report.anomalies] == [("acked-absent", (b,), REGIONS[1])]


# --------------------------------------------------------------------------- CLI


def _load_line(req_id, digest, status, replay=None, t=0.0, url=REGIONS[0], pcs_id="k"):
    return json.dumps({"req_id": req_id, "item": 0, "attempt": 1, "final": True, "kind": "valid", "tenant": "t",
                       "pcs_id": pcs_id, "digest": digest, "url": url + "/v1/pcs/submit", "status": status,
                       "error": None if status else "timeout", "replay": replay, "latency_s": 0.5,
                       "t_send": t, "t_recv": t + 0.5, "t_sched": None})


def test_cli_history_check_exit_codes_and_witness(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join([_load_line("1-0-1", DIGESTS[0], 200, False), _load_line("1-1-1", DIGESTS[0], 200, True, 1),
                               _load_line("1-2-1", DIGESTS[1], 409, None, 2)]) + "\n")
    final = tmp_path / "final.jsonl"
    final.write_text(json.dumps({"tenant": "t", "pcs_id": "k", "digest": DIGESTS[0], "status": 200}) + "\n")
    assert cli.main(["history", "check", str(good), "--final-reads", str(final)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_load_line("2-0-1", DIGESTS[1], 200, False, 5) + "\n")
    assert cli.main(["history", "check", str(good), str(bad), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["anomalies_by_invariant"] == {"INV-FWW": 2, "INV-IDEMPOTENT-REPLAY": 0, "INV-NO-ACKED-LOSS": 0}
    witnesses = {a["kind"]: [w["op"] for w in a["witness"]] for a in report["anomalies"]}
    assert witnesses == {"two-acked-digests": ["c0/1-0-1", "c1/2-0-1"],
                         "refused-then-acked": ["c0/1-0-1", "c0/1-2-1", "c1/2-0-1"]}
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert cli.main(["history", "check", str(good), "--final-reads", str(empty)]) == 1
    assert "INV-NO-ACKED-LOSS" in capsys.readouterr().out


def test_final_reads_under_a_region_label_no_operation_used_check_nothing_and_say_so(tmp_path, capsys):
    """A final read labelled http://localhost:1 for a load sent to http://127.0.0.1:1 covers no
    acknowledged operation: the report names the label and the unread region, and the verdict
    says INV-NO-ACKED-LOSS was not exercised (it said 'no final reads given')."""
    history = tmp_path / "h.jsonl"
    history.write_text(_load_line("1-0-1", DIGESTS[0], 200, False) + "\n")
    wrong, right = tmp_path / "wrong.jsonl", tmp_path / "right.jsonl"
    read = {"tenant": "t", "pcs_id": "k", "digest": DIGESTS[0], "status": 200}
    wrong.write_text(json.dumps({"region": "http://localhost:1", **read}) + "\n")
    right.write_text(json.dumps({"region": REGIONS[0], **read}) + "\n")
    assert cli.main(["history", "check", str(history), "--final-reads", str(wrong), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["final_checked"] == 0
    assert (report["final_unmatched"], report["final_unread"]) == (["http://localhost:1"], [REGIONS[0]])
    assert cli.main(["history", "check", str(history), "--final-reads", str(wrong)]) == 0
    out = capsys.readouterr().out
    assert "name region http://localhost:1, which no operation was sent to" in out
    assert f"region {REGIONS[0]} acknowledged operations but no final read covers it" in out
    assert "INV-NO-ACKED-LOSS not exercised" in out
    assert cli.main(["history", "check", str(history), "--final-reads", str(right), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["final_checked"], report["final_unmatched"], report["final_unread"]) == (1, [], [])


def test_cli_history_check_bad_input_is_exit_2_with_file_and_line(tmp_path, capsys):
    cases = {
        "missing.jsonl": None,
        "notjson.jsonl": _load_line("1", DIGESTS[0], 200, False) + "\n{oops\n",
        "nofield.jsonl": json.dumps({"req_id": "1", "tenant": "t"}) + "\n",
        "badtime.jsonl": _load_line("1", DIGESTS[0], 200, False).replace('"t_recv": 0.5', '"t_recv": -1') + "\n",
        "empty.jsonl": "\n",
        "dupid.jsonl": _load_line("1", DIGESTS[0], 200, False) + "\n" + _load_line("1", DIGESTS[0], 200, True) + "\n",
    }
    for name, text in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        assert cli.main(["history", "check", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert "flk history: error:" in err and "Traceback" not in err, (name, err)
    assert ":2: not JSON" in _err_of(tmp_path / "notjson.jsonl", capsys)
    assert ":1: field 't_send' must be int or float" in _err_of(tmp_path / "nofield.jsonl", capsys)
    assert "missing.jsonl: no such file" in _err_of(tmp_path / "missing.jsonl", capsys)
    assert "is a directory" in _err_of(tmp_path, capsys)
    (tmp_path / "latin1.jsonl").write_bytes(b"\xff\n")
    assert "latin1.jsonl: not UTF-8 text" in _err_of(tmp_path / "latin1.jsonl", capsys)


def _err_of(path, capsys) -> str:
    cli.main(["history", "check", str(path)])
    return capsys.readouterr().err


@given(status=st.one_of(st.integers(-10**6, 10**6), st.integers(95, 605), st.just(None)))
def test_a_status_is_an_http_status_or_the_record_is_invalid(status):
    """A load record's (and a final read's) status is 100-599 or null; any other number is an
    invalid record naming the field (99999 was taken as an indeterminate answer)."""
    rec = json.loads(_load_line("1", DIGESTS[0], status, False))
    final = [("f:1", {"tenant": "t", "pcs_id": "k", "digest": DIGESTS[0], "status": status})]
    if status is None or 100 <= status <= 599:
        assert hc.op_from_load_record(rec, "h:1").status == status
        assert hc.final_reads_from_records(final)[None][("t", "k")] == (DIGESTS[0], status)
        return
    for read, where in ((lambda: hc.op_from_load_record(rec, "h:1"), "h:1"),
                        (lambda: hc.final_reads_from_records(final), "f:1")):
        try:
            read()
        except ValueError as exc:
            assert str(exc).startswith(f"{where}: field 'status' must be an HTTP status (100 to 599)"), str(exc)
        else:
            raise AssertionError(f"status {status} accepted")


def test_cli_history_check_refuses_a_status_that_is_no_http_status(tmp_path, capsys):
    path = tmp_path / "h.jsonl"
    path.write_text(_load_line("1", DIGESTS[0], 200, False) + "\n" + _load_line("2", DIGESTS[0], 99999, None) + "\n")
    assert cli.main(["history", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: field 'status' must be an HTTP status (100 to 599) or null, got 99999" in err, err
    assert err.count("\n") == 1
