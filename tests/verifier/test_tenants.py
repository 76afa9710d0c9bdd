"""flk.impl.verifier.tenants: config forms, key windows, rate limit and quota (pure, time passed in)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.core.errors import InvalidInput
from flk.impl.core.signing import b64encode
from flk.impl.verifier.tenants import Limiter, from_env, from_mapping, load_toml, parse_tenants_env

from .pcsgen import ED_PUB_C

PUB = b64encode(ED_PUB_C)


def test_toml_file_with_key_windows_and_limits(tmp_path):
    p = tmp_path / "tenants.toml"
    p.write_text(f"""
[defaults]
rate_per_s = 5.0
burst = 10
profiles = ["v1"]

[tenants.acme]
alg = "hmac"
daily_quota = 100
pii_mode = "block"
labels = {{ team = "core" }}
[[tenants.acme.keys]]
id = "old"
secret = "s-old"
not_after = 2000
[[tenants.acme.keys]]
id = "new"
secret = "s-new"
not_before = 1500

[tenants.edco]
alg = "ed25519"
profiles = ["v1", "legacy-0.1"]
[[tenants.edco.keys]]
public_key_b64 = "{PUB}"
not_before = 1970-01-01T00:16:40Z
""")
    reg = load_toml(str(p))
    acme = reg.resolve("acme")
    assert acme.alg == "hmac" and acme.rate_per_s == 5.0 and acme.burst == 10 and acme.daily_quota == 100
    assert acme.pii_mode == "block" and acme.labels == (("team", "core"),)
    # rotation overlap: old only, both, new only
    assert acme.active_keys(1000) == [b"s-old"]
    assert acme.active_keys(1500) == [b"s-old", b"s-new"]
    assert acme.active_keys(2000) == [b"s-new"]
    ed = reg.resolve("edco")
    assert ed.allows("legacy-0.1") and not acme.allows("legacy-0.1")
    assert ed.keys[0].not_before == 1000.0 and ed.active_keys(999) == []
    assert reg.resolve(None) is None and reg.resolve("nobody") is None
    assert "s-old" not in repr(acme)  # key material never in repr (logs)


@pytest.mark.parametrize("doc, field", [
    ({"tenants": {"a": {"alg": "none", "keys": [{"secret": "x"}]}}}, "tenants.a.alg"),
    ({"tenants": {"a": {"alg": "hmac", "keys": []}}}, "tenants.a.keys"),
    ({"tenants": {"a": {"alg": "hmac", "keys": [{"secret": "x", "bogus": 1}]}}}, "tenants.a.keys[0].bogus"),
    ({"tenants": {"a": {"alg": "ed25519", "keys": [{"public_key_b64": "AAAA"}]}}}, "tenants.a.keys[0].public_key_b64"),
    ({"tenants": {"a": {"alg": "hmac", "keys": [{"secret": "x"}], "profiles": ["v2"]}}}, "tenants.a.profiles"),
    ({"tenants": {"a": {"alg": "hmac", "keys": [{"secret": "x"}], "pii_mode": "loud"}}}, "tenants.a.pii_mode"),
    ({"tenants": {"a|b": {"alg": "hmac", "keys": [{"secret": "x"}]}}}, "tenants.a|b"),
    ({"tenants": {"a": {"alg": "hmac", "keys": [{"secret": "x", "not_before": 5, "not_after": 5}]}}},
     "tenants.a.keys[0].not_after"),
    ({"tenants": {}}, "tenants"),
])
def test_bad_config_names_the_field(doc, field):
    with pytest.raises(InvalidInput) as e:
        from_mapping(doc)
    assert e.value.field == field


def test_bad_toml_is_invalid_input(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text("[tenants\n")
    with pytest.raises(InvalidInput):
        load_toml(str(p))
    with pytest.raises(InvalidInput):
        load_toml(str(tmp_path / "missing.toml"))


def test_seed_env_form_several_keys_per_tenant():
    reg = parse_tenants_env(f"t1:hmac:key1,t2:ed25519:{PUB},t1:hmac:key2", rate_per_s=3.0)
    assert reg.ids() == ["t1", "t2"]
    assert reg.resolve("t1").active_keys(0) == [b"key1", b"key2"]
    assert reg.resolve("t2").active_keys(0) == [ED_PUB_C]
    assert reg.resolve("t1").rate_per_s == 3.0
    assert not reg.single and reg.resolve(None) is None
    for bad in ["t1:hmac", "t1:rsa:k", "t1:hmac:k,t1:ed25519:" + PUB, "", "bad|id:hmac:k"]:
        with pytest.raises(InvalidInput):
            parse_tenants_env(bad)


def test_single_tenant_env():
    reg = from_env({"PCS_SIGN_ALG": "hmac", "PCS_HMAC_KEYS": "a,b"})
    assert reg.single and reg.resolve(None).tenant_id == "default"
    assert reg.resolve("").active_keys(0) == [b"a", b"b"]
    reg = from_env({"PCS_SIGN_ALG": "ed25519", "PCS_ED25519_PUB_B64": PUB})
    assert reg.resolve(None).alg == "ed25519"
    assert from_env({"TENANTS": "x:hmac:k", "PCS_SIGN_ALG": "hmac"}).ids() == ["x"]
    for env in [{}, {"PCS_SIGN_ALG": "none"}, {"PCS_SIGN_ALG": "hmac"}, {"PCS_SIGN_ALG": "ed25519"}]:
        with pytest.raises(InvalidInput):
            from_env(env)
    # hmac is the default, as for the server and the agent: a key alone is a single tenant (it said
    # "PCS_SIGN_ALG: ... 'none' is not supported" for an unset PCS_SIGN_ALG)
    assert from_env({"PCS_HMAC_KEY": "k"}).resolve(None).active_keys(0) == [b"k"]
    with pytest.raises(InvalidInput) as info:
        from_env({})
    assert info.value.field == "PCS_HMAC_KEY" and "(the default)" in str(info.value)


def _tenant(rate, burst, quota=0):
    return from_mapping({"tenants": {"t": {"alg": "hmac", "keys": [{"secret": "k"}], "rate_per_s": rate,
                                           "burst": burst, "daily_quota": quota}}}).resolve("t")


def test_token_bucket_and_retry_after():
    t = _tenant(rate=2.0, burst=3)
    lim = Limiter()
    assert [lim.admit(t, 100.0).ok for _ in range(4)] == [True, True, True, False]
    a = lim.admit(t, 100.0)
    assert a.reason == "rate_limited" and a.retry_after == 1
    assert lim.admit(t, 100.5).ok  # one token refilled
    assert not lim.admit(t, 100.5).ok


def test_daily_quota_resets_at_utc_midnight():
    t = _tenant(rate=0, burst=0, quota=2)
    lim = Limiter()
    day = 86400.0 * 20000
    assert lim.admit(t, day + 10).ok and lim.admit(t, day + 20).ok
    a = lim.admit(t, day + 86000)
    assert not a.ok and a.reason == "quota_exceeded" and a.retry_after == 400
    assert lim.admit(t, day + 86400).ok


@settings(max_examples=60, deadline=None)
@given(rate=st.floats(0.5, 50), burst=st.integers(1, 20),
       gaps=st.lists(st.floats(0, 2, allow_nan=False), min_size=1, max_size=60))
def test_token_bucket_never_admits_more_than_burst_plus_refill(rate, burst, gaps):
    t = _tenant(rate=rate, burst=burst)
    lim = Limiter()
    now, admitted = 0.0, 0
    for g in gaps:
        now += g
        a = lim.admit(t, now)
        admitted += a.ok
        if not a.ok:
            assert a.retry_after >= 1
    assert admitted <= burst + rate * now + 1e-9
