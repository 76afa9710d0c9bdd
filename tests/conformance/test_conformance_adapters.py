"""The reference adapters pass every vector; the Node adapter agrees with the
Python core on random inputs too (differential test).

Builtin (in process), Python subprocess and Node.js must pass all v1 vectors
(the conformance kit's acceptance) and the legacy-0.1 ones they support.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.conformance import runner
from flk.conformance.adapter_io import BuiltinAdapter, ProcessAdapter
from flk.conformance.ops import handle
from flk.conformance.vectors import load_cases, vectors_dir

ROOT = pathlib.Path(__file__).resolve().parents[2]
NODE_ADAPTER = ROOT / "conformance" / "adapters" / "node" / "adapter.mjs"
NODE = shutil.which("node")
IN_CI = os.environ.get("CI", "").lower() == "true"
needs_node = pytest.mark.skipif(NODE is None and not IN_CI, reason="node not installed (make setup installs nodejs)")


def _node() -> str:
    """The node binary; a missing node skips locally and fails under CI=true."""
    if NODE is None:
        if IN_CI:
            pytest.fail("node not installed: make setup installs nodejs")
        pytest.skip("node not installed")
    return NODE


def _adapter(kind: str):
    if kind == "builtin":
        return BuiltinAdapter()
    if kind == "python":
        return ProcessAdapter([sys.executable, "-m", "flk.conformance.adapters.python"])
    return ProcessAdapter([_node(), str(NODE_ADAPTER)])


@pytest.fixture(scope="module")
def all_cases():
    cases = load_cases(ROOT / "spec" / "vectors")
    assert {c.profile for c in cases} == {"v1", "legacy-0.1"}
    return cases


@pytest.mark.parametrize("kind", ["builtin", "python", "node"])
def test_reference_adapter_passes_every_vector(kind, all_cases):
    report = runner.run_cases(_adapter(kind), all_cases, timeout=30)
    failures = [f"{r.case.case_id}: {r.message}" for r in report.results if r.status == "fail"]
    assert not failures, "\n".join(failures[:20])
    assert not report.broken and report.exit_code == 0
    v1 = [r for r in report.results if r.case.profile == "v1"]
    assert v1 and all(r.status == "pass" for r in v1), "every v1 vector passes, none skipped"
    skipped_ops = {r.case.operation for r in report.results if r.status == "skip"}
    assert skipped_ops <= {"build_pcs"}


def test_vectors_are_found_through_the_package():
    d = vectors_dir()
    assert (d / "canonical_bytes.v1.json").is_file()


def test_cli_last_line_and_exit_code(capsys):
    from flk.impl.lab.cli import main

    code = main(["conformance", "vectors", "--adapter", "builtin", "--no-probes"])
    out = capsys.readouterr().out.splitlines()
    n = len(load_cases(profile="v1"))
    assert code == 0 and out[-1] == f"{n} passed, 0 failed, 0 skipped"
    code = main(["conformance", "vectors", "--adapter", "builtin"])  # with the self-consistent probes
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and out[-1].endswith(" passed, 0 failed, 0 skipped") and int(out[-1].split()[0]) > n


# -- differential: Node against the Python core on random inputs -------------------------
@pytest.fixture(scope="module")
def node_adapter():
    a = ProcessAdapter([_node(), str(NODE_ADAPTER)])
    a.start()
    yield a
    a.close()


def _f64(x: float) -> dict:
    return {"f64": struct.pack(">d", x).hex()}


def _agree(adapter, op: str, profile: str, inp: dict) -> None:
    request = {"op": op, "profile": profile, "input": inp}
    want = json.loads(json.dumps(handle({**request, "id": 1})))
    reply = adapter.call(request, 20)
    assert reply.status == "ok", reply.detail
    got = reply.response
    assert got["ok"] == want["ok"], (request, want, got)
    if want["ok"]:
        assert got["output"] == want["output"], request
    else:
        assert got["error"]["kind"] == want["error"]["kind"], (request, want, got)


any_float = st.floats(allow_nan=True, allow_infinity=True)
ties = st.integers(-(2**40), 2**40).map(lambda j: (2 * j + 1) / 1024.0)
floats = st.one_of(any_float, ties, st.floats(-10, 10), st.sampled_from([0.0, -0.0, 5e-10, -5e-10, 1e21, 1e-7]))
texts = st.text(st.characters(codec="utf-16", exclude_categories=()), max_size=12)

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@needs_node
@SETTINGS
@given(x=floats)
def test_inv_round_node_fmt9_agrees_with_the_core(node_adapter, x):
    _agree(node_adapter, "fmt9", "v1", {"x": _f64(x)})


@needs_node
@SETTINGS
@given(d=floats, c=floats, s=texts, epoch=st.integers(-1, 2**53 + 1), profile=st.sampled_from(["v1", "legacy-0.1"]))
def test_inv_canon_node_canonical_bytes_agree_with_the_core(node_adapter, d, c, s, epoch, profile):
    subset = {"pcs_id": "p" * 64, "merkle_root": "m" * 64, "shard_id": s, "epoch": epoch,
              "D_hat": _f64(d), "coh_star": _f64(c), "r": 0.25, "budget": 0.5}
    _agree(node_adapter, "canonical_bytes", profile, {"subset": subset})


@needs_node
@SETTINGS
@given(
    scales=st.lists(st.integers(2, 4096), min_size=2, max_size=8, unique=True).map(sorted),
    counts=st.lists(st.integers(1, 10**6), min_size=8, max_size=8),
    profile=st.sampled_from(["v1", "legacy-0.1"]),
)
def test_node_d_hat_agrees_with_the_core(node_adapter, scales, counts, profile):
    _agree(node_adapter, "d_hat", profile, {"scales": scales, "n_j": counts[: len(scales)]})


@needs_node
@SETTINGS
@given(d=st.floats(-5, 5), c=st.floats(0, 1), r=st.floats(0, 1))
def test_node_budget_and_regime_agree_with_the_core(node_adapter, d, c, r):
    _agree(node_adapter, "budget", "v1", {"D_hat": d, "coh_star": c, "r": r})
    _agree(node_adapter, "regime", "v1", {"D_hat": d, "coh_star": c})


@needs_node
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pts=st.integers(1, 3).flatmap(
        lambda d: st.lists(st.lists(st.floats(-100, 100), min_size=d, max_size=d), max_size=25)
    ),
    seed=st.integers(0, 2**64 - 1),
    bins=st.integers(1, 40),
    n_dir=st.integers(1, 30),
)
def test_node_coherence_agrees_with_the_core(node_adapter, pts, seed, bins, n_dir):
    _agree(node_adapter, "coherence", "v1", {"points": pts, "seed": seed, "bins": bins, "n_directions": n_dir})


@needs_node
def test_node_keeps_number_spellings_that_json_parse_would_blur():
    """epoch 7.0 / 7e0 are floats and 2^53+1 is out of range: rejected like the core does;
    plain 7 is accepted (the positive control)."""
    subset = ('"pcs_id":"p","merkle_root":"m","shard_id":"s","D_hat":1,"coh_star":0,"r":0,"budget":0,'
              '"epoch":{}')
    spellings = ["7", "7.0", "7e0", "9007199254740993", "-0"]
    lines = [
        f'{{"id":{i},"op":"canonical_bytes","profile":"v1","input":{{"subset":{{{subset.format(t)}}}}}}}'
        for i, t in enumerate(spellings, 1)
    ]
    proc = subprocess.run([_node(), str(NODE_ADAPTER)], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=60)
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    want = [json.loads(json.dumps(handle(json.loads(line)))) for line in lines]
    assert [g["ok"] for g in got] == [w["ok"] for w in want] == [True, False, False, False, True]
    assert got[0]["output"] == want[0]["output"] and got[4]["output"] == want[4]["output"]
    assert all(g["error"]["kind"] == "invalid_input" for g in got[1:4])


@needs_node
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chunks=st.lists(st.binary(max_size=40), max_size=17),
    key=st.binary(min_size=1, max_size=80),
    seed=st.binary(min_size=32, max_size=32),
    shard=st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True),
    epoch=st.integers(0, 2**53 - 1),
    profile=st.sampled_from(["v1", "legacy-0.1"]),
)
def test_node_merkle_pcs_id_and_signatures_agree_with_the_core(node_adapter, chunks, key, seed, shard, epoch, profile):
    import base64

    b64 = [base64.b64encode(c).decode() for c in chunks]
    _agree(node_adapter, "merkle_root", profile, {"chunks_b64": b64})
    root = json.loads(json.dumps(handle({"id": 1, "op": "merkle_root", "profile": "v1",
                                         "input": {"chunks_b64": b64}})))["output"]["root"]
    _agree(node_adapter, "pcs_id", "v1", {"merkle_root": root, "epoch": epoch, "shard_id": shard})
    subset = {"pcs_id": root, "merkle_root": root, "shard_id": shard, "epoch": epoch,
              "D_hat": 1.25, "coh_star": 0.5, "r": 0.125, "budget": 0.75}
    k = base64.b64encode(key).decode()
    _agree(node_adapter, "sign_hmac", profile, {"subset": subset, "key_b64": k})
    _agree(node_adapter, "sign_ed25519", "v1", {"subset": subset, "private_key_b64": base64.b64encode(seed).decode()})


# -- mutation fuzzing: every valid vector with one leaf replaced or removed ------------------
ODD_VALUES = [None, True, False, 0, -1, 1, 2**53, 2**64, 1.5, 7.0, 1e308, "", "a", "é", "\ud800", "AAAA", "==",
              [], {}, [1, 2], [[1, 2]], [[1], [1, 2]], "0" * 64, {"f64": "7ff0000000000000"},
              {"f64": "8000000000000000"}, {"f64": "zz"}]
_DROP = object()


def _paths(value, path=()):
    """Every position in a JSON value (an f64 object counts as one leaf)."""
    if path:
        yield path
    if isinstance(value, dict) and list(value) != ["f64"]:
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


def _mutated(value, path, new):
    value = json.loads(json.dumps(value))
    cur = value
    for p in path[:-1]:
        cur = cur[p]
    if new is _DROP:
        del cur[path[-1]]
    else:
        cur[path[-1]] = new
    return value


VALID_CASES = [c for c in load_cases(ROOT / "spec" / "vectors") if c.result == "valid"]


@needs_node
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_node_and_core_agree_on_mutated_vector_inputs(node_adapter, data):
    """Bad input gets the same verdict from both implementations, and never an internal error."""
    case = data.draw(st.sampled_from(VALID_CASES), label="case")
    paths = list(_paths(dict(case.input)))
    path = data.draw(st.sampled_from(paths), label="path")
    new = data.draw(st.sampled_from([_DROP, *ODD_VALUES]), label="replacement")
    inp = _mutated(dict(case.input), path, new)
    request = {"op": case.operation, "profile": case.profile, "input": inp}
    want = json.loads(json.dumps(handle({**request, "id": 1})))
    assert want["ok"] or want["error"]["kind"] != "internal", want
    _agree(node_adapter, case.operation, case.profile, inp)


@pytest.mark.parametrize("bad", [True, "1.5", None, [1.0]])
def test_coherence_points_must_be_numbers(bad):
    """numpy would read true and "1.5" as coordinates; the protocol does not."""
    points = [[0.0, 1.0], [bad, 2.0], [3.0, 1.0]]
    resp = handle({"id": 1, "op": "coherence", "profile": "v1", "input": {"points": points, "seed": 1}})
    assert resp["ok"] is False and resp["error"]["kind"] == "invalid_input"
    ok = handle({"id": 1, "op": "coherence", "profile": "v1", "input": {"points": [[0.0, 1.0], [1, 2.0]], "seed": 1}})
    assert ok["ok"] is True
