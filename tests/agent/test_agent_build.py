"""PCS builder and ``flk agent build``.

The output is checked against the v1 wire format of spec/ARCHITECTURE.md (and
spec/pcs.schema.json when it exists), and every derived field is recomputed
independently from the canonical core: pcs_id, Merkle root, budget/regime from
the published (rounded) values, and the signature.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.agent import builder as agent
from flk.impl.core import merkle, signals
from flk.impl.core.canonical import SIGNED_FIELDS, canonical_bytes, fmt9, round9
from flk.impl.core.errors import InvalidInput
from flk.impl.core.pcs import pcs_id
from flk.impl.core.signing import public_key_bytes, verify_ed25519, verify_hmac
from flk.impl.lab.cli import main as flk_main

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "spec" / "pcs.schema.json"
HMAC_KEY = "test-hmac-key-not-a-secret"
ED_SEED = bytes(range(32))
REQUIRED = ("pcs_id", "schema", "version", "shard_id", "epoch", "scales", "N_j", "coh_star",
            "v_star", "D_hat", "r", "regime", "budget", "merkle_root", "sig")
OPTIONAL = ("seed", "sig_alg", "attempt", "sent_at", "ft", "vrf_proof", "meta")

POINTS = [[0.1, 0.2], [0.3, 0.5], [0.9, 0.1], [0.4, 0.4], [0.15, 0.22], [0.7, 0.8], [0.71, 0.79]]


def check_wire_format(pcs: dict) -> None:
    """The v1 wire format of ARCHITECTURE.md, field by field."""
    assert set(REQUIRED) <= set(pcs), set(REQUIRED) - set(pcs)
    assert set(pcs) <= set(REQUIRED) | set(OPTIONAL), set(pcs) - set(REQUIRED) - set(OPTIONAL)
    assert pcs["schema"] == "fractal-lba-kakeya" and pcs["version"] == "1"
    scales = pcs["scales"]
    assert all(isinstance(s, int) and s >= 2 for s in scales)
    assert all(a < b for a, b in zip(scales, scales[1:], strict=False))
    assert list(pcs["N_j"]) and set(pcs["N_j"]) == {str(s) for s in scales}
    assert all(isinstance(v, int) and v >= 1 for v in pcs["N_j"].values())
    for f in ("coh_star", "D_hat", "r", "budget"):
        assert isinstance(pcs[f], float) and round9(pcs[f]) == pcs[f], f
    assert all(isinstance(v, float) for v in pcs["v_star"])
    assert pcs["regime"] in ("sticky", "mixed", "non_sticky")
    assert len(pcs["merkle_root"]) == 64 and len(pcs["pcs_id"]) == 64
    assert pcs["sig_alg"] in ("hmac", "ed25519")


def check_derived(pcs: dict, raw: bytes) -> None:
    """Every derived field recomputed from the canonical core."""
    assert pcs["merkle_root"] == merkle.stream_root(raw)
    assert pcs["pcs_id"] == pcs_id(pcs["merkle_root"], pcs["epoch"], pcs["shard_id"])
    assert pcs["r"] == round9(signals.compressibility(raw))
    n_j = [pcs["N_j"][str(s)] for s in pcs["scales"]]
    assert pcs["D_hat"] == round9(signals.d_hat(pcs["scales"], n_j))
    # budget and regime from the *published* (rounded) values: what a verifier sees
    assert pcs["budget"] == round9(signals.budget(pcs["D_hat"], pcs["coh_star"], pcs["r"]))
    # regime as the verifier recomputes it: D-hat from N_j, the published coh-star
    assert pcs["regime"] == signals.regime(signals.d_hat(pcs["scales"], n_j), pcs["coh_star"])


def write_csv(path: pathlib.Path, points, header=True) -> bytes:
    lines = (["x,y"] if header else []) + [",".join(repr(v) for v in p) for p in points]
    raw = ("\n".join(lines) + "\n").encode()
    path.write_bytes(raw)
    return raw


def run_cli(argv, capsys):
    rc = flk_main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def hmac_env(monkeypatch):
    for k in ("PCS_SIGN_ALG", "PCS_ED25519_PRIV_B64", "TENANT_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("PCS_HMAC_KEY", HMAC_KEY)


# ----------------------------------------------------------------------------- CLI


def test_build_csv_hmac_verifies_with_canonical_core(tmp_path, capsys, hmac_env):
    raw = write_csv(tmp_path / "ev.csv", POINTS)
    rc, out, err = run_cli(["agent", "build", "--input", str(tmp_path / "ev.csv"),
                            "--shard-id", "shard-7", "--epoch", "42", "--seed", "9"], capsys)
    assert rc == 0, err
    pcs = json.loads(out)
    check_wire_format(pcs)
    check_derived(pcs, raw)
    assert pcs["shard_id"] == "shard-7" and pcs["epoch"] == 42 and pcs["seed"] == 9
    assert pcs["sig_alg"] == "hmac"
    assert verify_hmac(pcs, pcs["sig"], [HMAC_KEY.encode()])
    assert not verify_hmac(pcs, pcs["sig"], [b"another key"])
    assert HMAC_KEY not in out + err


def test_build_ed25519_verifies_with_canonical_core(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PCS_SIGN_ALG", "ed25519")
    monkeypatch.setenv("PCS_ED25519_PRIV_B64", base64.b64encode(ED_SEED).decode())
    monkeypatch.delenv("PCS_HMAC_KEY", raising=False)
    raw = write_csv(tmp_path / "ev.csv", POINTS)
    rc, out, err = run_cli(["agent", "build", "--input", str(tmp_path / "ev.csv"),
                            "--shard-id", "s", "--epoch", "1"], capsys)
    assert rc == 0, err
    pcs = json.loads(out)
    check_wire_format(pcs)
    check_derived(pcs, raw)
    assert pcs["sig_alg"] == "ed25519"
    assert verify_ed25519(pcs, pcs["sig"], [public_key_bytes(ED_SEED)])
    tampered = dict(pcs, epoch=2)
    assert not verify_ed25519(tampered, pcs["sig"], [public_key_bytes(ED_SEED)])


def test_build_three_formats_agree_on_signals(tmp_path, capsys, hmac_env):
    """The same points as CSV, JSONL (arrays and objects) and .npy give the same
    N_j, D-hat and coh-star; r and the Merkle root follow each file's raw bytes."""
    write_csv(tmp_path / "a.csv", POINTS, header=False)
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(p) + "\n" for p in POINTS))
    (tmp_path / "c.ndjson").write_text("".join(json.dumps({"y": p[1], "x": p[0], "id": "e"}) + "\n"
                                               for p in POINTS))
    buf = io.BytesIO()
    np.save(buf, np.asarray(POINTS))
    (tmp_path / "d.npy").write_bytes(buf.getvalue())
    results = []
    for name in ("a.csv", "b.jsonl", "c.ndjson", "d.npy"):
        rc, out, err = run_cli(["agent", "build", "--input", str(tmp_path / name),
                                "--shard-id", "s", "--epoch", "0", "--compact"], capsys)
        assert rc == 0, (name, err)
        pcs = json.loads(out)
        check_wire_format(pcs)
        check_derived(pcs, (tmp_path / name).read_bytes())
        results.append(pcs)
    for pcs in results[1:]:
        for f in ("N_j", "D_hat", "coh_star", "v_star"):
            assert pcs[f] == results[0][f], f
    assert len({p["merkle_root"] for p in results}) == 4


def test_build_is_deterministic_and_seed_matters(tmp_path, capsys, hmac_env):
    rng = np.random.default_rng(5)
    write_csv(tmp_path / "ev.csv", rng.random((300, 3)).tolist(), header=False)
    outs = []
    for seed in ("1", "1", "2"):
        rc, out, _ = run_cli(["agent", "build", "--input", str(tmp_path / "ev.csv"),
                              "--shard-id", "s", "--epoch", "0", "--seed", seed], capsys)
        assert rc == 0
        outs.append(json.loads(out))
    assert outs[0] == outs[1]
    assert outs[0]["v_star"] != outs[2]["v_star"]


def test_build_tenant_from_env_or_flag_does_not_change_signed_bytes(tmp_path, capsys, hmac_env,
                                                                     monkeypatch):
    write_csv(tmp_path / "ev.csv", POINTS)
    monkeypatch.setenv("TENANT_ID", "acme")
    rc1, out1, _ = run_cli(["agent", "build", "--input", str(tmp_path / "ev.csv"),
                            "--shard-id", "s", "--epoch", "0"], capsys)
    rc2, out2, _ = run_cli(["agent", "build", "--input", str(tmp_path / "ev.csv"),
                            "--shard-id", "s", "--epoch", "0", "--tenant", "other"], capsys)
    assert rc1 == rc2 == 0
    assert canonical_bytes(json.loads(out1)) == canonical_bytes(json.loads(out2))


def schema_validator():
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def test_build_output_validates_against_pcs_schema(tmp_path, capsys, hmac_env):
    validator = schema_validator()
    write_csv(tmp_path / "ev.csv", POINTS)
    rc, out, err = run_cli(["agent", "build", "--input", str(tmp_path / "ev.csv"),
                            "--shard-id", "shard-1", "--epoch", "3"], capsys)
    assert rc == 0, err
    pcs = json.loads(out)
    errors = sorted(validator.iter_errors(pcs), key=str)
    assert not errors, [e.message for e in errors]
    # and the schema is not vacuous: a PCS without a signature is rejected
    assert list(validator.iter_errors({k: v for k, v in pcs.items() if k != "sig"}))


BAD_CASES = [
    ("missing file", None, ["--shard-id", "s", "--epoch", "1"], "no such file"),
    ("empty csv", b"", ["--shard-id", "s", "--epoch", "1"], "no points"),
    ("header only", b"x,y\n", ["--shard-id", "s", "--epoch", "1"], "no points"),
    ("non-numeric", b"1,2\n3,abc\n", ["--shard-id", "s", "--epoch", "1"], "line 2"),
    ("ragged", b"1,2\n3\n", ["--shard-id", "s", "--epoch", "1"], "columns"),
    ("nan", b"1,2\nnan,3\n", ["--shard-id", "s", "--epoch", "1"], "number"),
    ("binary", b"\xff\xfe\x00", ["--shard-id", "s", "--epoch", "1"], "UTF-8"),
    ("bad shard", b"1,2\n", ["--shard-id", "a|b", "--epoch", "1"], "shard_id"),
    ("bad epoch", b"1,2\n", ["--shard-id", "s", "--epoch", "-1"], "epoch"),
    ("epoch not int", b"1,2\n", ["--shard-id", "s", "--epoch", "1.5"], "integer"),
]


@pytest.mark.parametrize("name,content,extra,needle", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_build_bad_input_exit_2_clear_message(tmp_path, capsys, hmac_env, name, content, extra, needle):
    path = tmp_path / "ev.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) if name == "epoch not int" else _nullctx() as exc:
        rc, out, err = run_cli(["agent", "build", "--input", str(path), *extra], capsys)
    if name == "epoch not int":
        assert exc.value.code == 2
        err = capsys.readouterr().err
    else:
        assert rc == 2 and out == ""
    assert needle in err and "Traceback" not in err


class _nullctx:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize("env,needle", [
    ({"PCS_SIGN_ALG": "rsa", "PCS_HMAC_KEY": "k"}, "PCS_SIGN_ALG"),
    ({}, "PCS_HMAC_KEY"),
    ({"PCS_SIGN_ALG": "ed25519"}, "PCS_ED25519_PRIV_B64"),
    ({"PCS_SIGN_ALG": "ed25519", "PCS_ED25519_PRIV_B64": "not base64!"}, "base64"),
    ({"PCS_SIGN_ALG": "ed25519", "PCS_ED25519_PRIV_B64": base64.b64encode(b"short").decode()}, "32-byte"),
])
def test_build_bad_keys_exit_2_without_echoing_them(tmp_path, capsys, monkeypatch, env, needle):
    for k in ("PCS_SIGN_ALG", "PCS_HMAC_KEY", "PCS_ED25519_PRIV_B64", "TENANT_ID"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    write_csv(tmp_path / "ev.csv", POINTS)
    rc, out, err = run_cli(["agent", "build", "--input", str(tmp_path / "ev.csv"),
                            "--shard-id", "s", "--epoch", "1"], capsys)
    assert rc == 2 and out == ""
    assert needle in err and "Traceback" not in err
    if "PCS_ED25519_PRIV_B64" in env:
        assert env["PCS_ED25519_PRIV_B64"] not in err


def test_build_unknown_extension_needs_format(tmp_path, capsys, hmac_env):
    (tmp_path / "ev.txt").write_text("1,2\n3,4\n")
    rc, _, err = run_cli(["agent", "build", "--input", str(tmp_path / "ev.txt"),
                          "--shard-id", "s", "--epoch", "1"], capsys)
    assert rc == 2 and "--format" in err
    rc, out, _ = run_cli(["agent", "build", "--input", str(tmp_path / "ev.txt"), "--format", "csv",
                          "--shard-id", "s", "--epoch", "1"], capsys)
    assert rc == 0 and json.loads(out)["N_j"]["2"] == 2


def test_build_subprocess_keys_only_from_environment(tmp_path):
    """The real entry point; there is no argv option that takes a key."""
    write_csv(tmp_path / "ev.csv", POINTS)
    env = dict(os.environ, PCS_HMAC_KEY=HMAC_KEY, PCS_SIGN_ALG="hmac")
    proc = subprocess.run([sys.executable, "-m", "flk.impl", "agent", "build", "--input",
                           str(tmp_path / "ev.csv"), "--shard-id", "s", "--epoch", "5"],
                          capture_output=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert verify_hmac(json.loads(proc.stdout), json.loads(proc.stdout)["sig"], [HMAC_KEY.encode()])
    helptext = subprocess.run([sys.executable, "-m", "flk.impl", "agent", "build", "--help"],
                              capture_output=True, text=True, timeout=60).stdout
    assert "--input" in helptext and "key" not in helptext.replace("no key needed", "").lower()


# ----------------------------------------------------------------------------- library


SCHEMA = schema_validator()
points_strategy = st.integers(1, 4).flatmap(
    lambda d: st.lists(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=d, max_size=d),
                       min_size=1, max_size=60))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(points=points_strategy, seed=st.integers(0, 2**64 - 1), epoch=st.integers(0, 2**53 - 1))
def test_inv_budget_bounds_and_build_invariants(points, seed, epoch):
    """INV-BUDGET-BOUNDS / INV-REGIME-PARTITION / INV-PCSID on built PCS: any
    point set gives a well-formed, self-consistent, verifiable PCS."""
    raw = json.dumps(points).encode()
    signer = agent.Signer("hmac", b"k")
    pcs = agent.build_pcs(points, raw, "shard", epoch, signer, seed=seed)
    check_wire_format(pcs)
    check_derived(pcs, raw)
    counts = [pcs["N_j"][str(s)] for s in pcs["scales"]]
    assert counts == sorted(counts) and counts[-1] <= len(points)
    assert 0.0 <= pcs["budget"] <= 1.0
    assert 0.0 < pcs["coh_star"] <= 1.0
    assert verify_hmac(pcs, pcs["sig"], [b"k"])
    assert agent.build_pcs(points, raw, "shard", epoch, signer, seed=seed) == pcs
    assert not list(SCHEMA.iter_errors(pcs))


def test_published_floats_are_fmt9_exact():
    pcs = agent.build_pcs(POINTS, b"abc" * 100, "s", 1, agent.Signer("hmac", b"k"))
    for f in ("D_hat", "coh_star", "r", "budget"):
        assert float(fmt9(pcs[f])) == pcs[f]
    assert set(SIGNED_FIELDS) <= set(pcs)


def test_unsigned_build_has_no_sig():
    pcs = agent.build_pcs(POINTS, b"x", "s", 1, None)
    assert "sig" not in pcs and "sig_alg" not in pcs


@pytest.mark.parametrize("kwargs,field", [
    ({"points": []}, "points"),
    ({"points": [[1.0, float("nan")]]}, "points"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"shard_id": ""}, "shard_id"),
    ({"epoch": 2**53}, "epoch"),
    ({"scales": [4, 2]}, "scales[1]"),
])
def test_build_pcs_rejects_bad_input(kwargs, field):
    args = {"points": POINTS, "raw": b"x", "shard_id": "s", "epoch": 1, "signer": None, **kwargs}
    with pytest.raises(InvalidInput) as exc:
        agent.build_pcs(**args)
    assert exc.value.field == field


def test_signer_repr_hides_key():
    s = agent.Signer("hmac", b"super-secret-value")
    assert "super-secret-value" not in repr(s)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(points=points_strategy, seed=st.integers(0, 2**64 - 1), ed=st.booleans())
def test_built_pcs_is_accepted_by_the_real_verify_pipeline(points, seed, ed):
    """The verifier (flk.impl.verifier.pipeline) recomputes D-hat, budget and regime from
    what the agent published and finds nothing to object to: 200, no reasons."""
    from flk.impl.dedup.memory import MemoryStore
    from flk.impl.testing.memwal import MemoryWal
    from flk.impl.verifier.pipeline import Request, Verifier, run_sync
    from flk.impl.verifier.tenants import from_env

    if ed:
        signer = agent.Signer("ed25519", ED_SEED)
        env = {"PCS_SIGN_ALG": "ed25519", "PCS_ED25519_PUB_B64": base64.b64encode(public_key_bytes(ED_SEED)).decode()}
    else:
        signer = agent.Signer("hmac", HMAC_KEY.encode())
        env = {"PCS_SIGN_ALG": "hmac", "PCS_HMAC_KEY": HMAC_KEY}
    raw = json.dumps(points).encode()
    pcs = agent.build_pcs(points, raw, "shard-v", 3, signer, seed=seed)
    body = json.dumps(dict(pcs, attempt=1, sent_at="2026-01-01T00:00:00Z")).encode()
    resp = run_sync(Verifier(from_env(env)).handle(Request(body, None), 1000.0), MemoryWal(), MemoryStore())
    assert resp.status == 200, resp.body[:400]
    tampered = dict(pcs, D_hat=round9(pcs["D_hat"] + 0.5))
    body = json.dumps(tampered).encode()
    resp = run_sync(Verifier(from_env(env)).handle(Request(body, None), 1000.0), MemoryWal(), MemoryStore())
    assert resp.status == 401  # the signature covers D_hat


def test_a_missing_hmac_key_says_where_a_default_server_keeps_its_key(tmp_path, capsys, monkeypatch):
    """A flk serve without PCS_HMAC_KEY signs with DATA_DIR/hmac.key: both of the agent's messages for
    a missing key (build's signer, the load generator's base secret) say how to use it."""
    monkeypatch.delenv("PCS_HMAC_KEY", raising=False)
    monkeypatch.delenv("PCS_SIGN_ALG", raising=False)
    write_csv(tmp_path / "ev.csv", POINTS)
    rc, out, err = run_cli(["agent", "build", "--input", str(tmp_path / "ev.csv"), "--shard-id", "s", "--epoch", "1"],
                           capsys)
    assert rc == 2 and out == ""
    assert "PCS_HMAC_KEY: is not set" in err and 'PCS_HMAC_KEY="$(cat DATA_DIR/hmac.key)"' in err, err
    monkeypatch.delenv("MY_KEY", raising=False)  # the load generator's base secret, named by --hmac-key-env
    rc, out, err = run_cli(["agent", "tenants-env", "--tenants", "2", "--hmac-key-env", "MY_KEY"], capsys)
    assert rc == 2 and "$MY_KEY is not set" in err and 'MY_KEY="$(cat DATA_DIR/hmac.key)"' in err, err
